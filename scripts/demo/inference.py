"""The demo's inference script (SageMaker script mode serving, in the same
scikit-learn image): loads the model the training job saved with joblib
and answers {"x": [...]} with {"y": [...]}."""
import os

import joblib
import numpy as np


def model_fn(model_dir):
    return joblib.load(os.path.join(model_dir, "model.joblib"))


def predict_fn(data, model):
    x = np.asarray(data["x"], dtype=float).reshape(-1, 1)
    return {"y": [round(float(y), 3) for y in model.predict(x)]}
