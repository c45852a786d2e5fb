"""The demo's training script (SageMaker script mode): fits y = w*x + b by
gradient descent on the CSV files of the `train` channel, with only the
standard library, and saves the model where SageMaker expects it."""
import argparse
import json
import os

parser = argparse.ArgumentParser()
parser.add_argument("--epochs", type=int, default=200)
parser.add_argument("--learning-rate", type=float, default=0.05)
args = parser.parse_args()

rows = []
train_dir = os.environ["SM_CHANNEL_TRAIN"]
for name in sorted(os.listdir(train_dir)):
    with open(os.path.join(train_dir, name)) as f:
        rows += [tuple(map(float, line.split(","))) for line in f if line.strip()]
print(f"{os.environ['SM_CURRENT_HOST']}: {len(rows)} rows from {train_dir}")

w = b = 0.0
for epoch in range(1, args.epochs + 1):
    gw = sum((w * x + b - y) * x for x, y in rows) / len(rows)
    gb = sum((w * x + b - y) for x, y in rows) / len(rows)
    w -= args.learning_rate * gw
    b -= args.learning_rate * gb
    if epoch % (args.epochs // 5) == 0:
        mse = sum((w * x + b - y) ** 2 for x, y in rows) / len(rows)
        print(f"epoch {epoch}: mse={mse:.4f} w={w:.3f} b={b:.3f}")

with open(os.path.join(os.environ["SM_MODEL_DIR"], "model.json"), "w") as f:
    json.dump({"w": w, "b": b, "rows": len(rows)}, f)
print("model saved")
