"""The demo's training script (SageMaker script mode, run in Cove's
scikit-learn framework image): reads the CSV files of the `train` channel
with pandas, fits y = w*x + b with scikit-learn's LinearRegression, and
saves the model with joblib where SageMaker expects it (plus its
coefficients as JSON, which the demo prints)."""
import argparse
import json
import os

import joblib
import numpy as np
import pandas as pd
import sklearn
from sklearn.linear_model import LinearRegression
from sklearn.metrics import mean_squared_error

parser = argparse.ArgumentParser()
parser.add_argument("--fit-intercept", type=lambda v: v.lower() == "true", default=True)
args = parser.parse_args()

train_dir = os.environ["SM_CHANNEL_TRAIN"]
frame = pd.concat(pd.read_csv(os.path.join(train_dir, name), header=None, names=["x", "y"])
                  for name in sorted(os.listdir(train_dir)))
print(f"{os.environ['SM_CURRENT_HOST']}: {len(frame)} rows from {train_dir} "
      f"(numpy {np.__version__}, pandas {pd.__version__}, scikit-learn {sklearn.__version__})")

model = LinearRegression(fit_intercept=args.fit_intercept).fit(frame[["x"]], frame["y"])
mse = mean_squared_error(frame["y"], model.predict(frame[["x"]]))
w, b = float(model.coef_[0]), float(model.intercept_)
print(f"fitted: w={w:.3f} b={b:.3f} mse={mse:.4f}")

model_dir = os.environ["SM_MODEL_DIR"]
joblib.dump(model, os.path.join(model_dir, "model.joblib"))
with open(os.path.join(model_dir, "model.json"), "w") as f:
    json.dump({"w": round(w, 4), "b": round(b, 4), "rows": len(frame)}, f)
print("model saved")
