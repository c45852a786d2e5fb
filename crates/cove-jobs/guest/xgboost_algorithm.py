"""Cove's XGBoost built-in algorithm, for the XGBoost framework image.

SageMaker's XGBoost image runs as a built-in algorithm when a job gives it
hyperparameters and data instead of a script. This program plays that part
with the image's xgboost package, following the SageMaker container
contract (files under /opt/ml, not environment variables):

- `train`: reads `/opt/ml/input/config/hyperparameters.json` (`num_round`
  is required; the other values are XGBoost's booster parameters such as
  `objective`, `max_depth`, `eta`, `eval_metric`, `num_class`, plus
  `early_stopping_rounds`) and `inputdataconfig.json`, loads the `train`
  channel (and `validation` when given) as CSV (`text/csv`: label in the
  first column, no header) or LIBSVM (`text/libsvm`, the default), trains,
  prints the evaluation of every round as XGBoost does
  (`[3]\ttrain-rmse:0.51\tvalidation-rmse:0.62`), and saves the booster as
  `/opt/ml/model/xgboost-model` (XGBoost's binary format: load it with
  `xgboost.Booster().load_model`). Bad input fails the job with a
  `ClientError` in `/opt/ml/output/failure`.
- serving (loaded by Cove's serving runtime when the model directory holds
  `xgboost-model` and no `SAGEMAKER_PROGRAM` is set): `text/csv` rows of
  features or `text/libsvm` lines in; predictions out as `text/csv`
  (comma-separated, one value per row, or one row of class probabilities per
  line for `multi:softprob`) or `application/json` (`{"predictions":
  [{"score": ...}]}`).
"""

import json
import os
import sys
import tempfile

CONFIG_DIR = "/opt/ml/input/config"
DATA_DIR = "/opt/ml/input/data"
MODEL_DIR = "/opt/ml/model"
FAILURE_FILE = "/opt/ml/output/failure"
MODEL_FILE = "xgboost-model"

# Hyperparameters that are not booster parameters.
NOT_BOOSTER = {"num_round", "early_stopping_rounds", "csv_weights", "_tuning_objective_metric"}


class ClientError(Exception):
    pass


class UnsupportedMediaType(ValueError):
    """Answered 415 by Cove's serving runtime."""


def fail(message):
    os.makedirs(os.path.dirname(FAILURE_FILE), exist_ok=True)
    with open(FAILURE_FILE, "w") as f:
        f.write(message[:1000])
    print(message, file=sys.stderr, flush=True)
    sys.exit(1)


def read_json(name):
    path = os.path.join(CONFIG_DIR, name)
    if not os.path.exists(path):
        return {}
    with open(path) as f:
        return json.load(f)


def number(value):
    """A hyperparameter as XGBoost wants it: SageMaker passes strings."""
    for kind in (int, float):
        try:
            return kind(value)
        except (TypeError, ValueError):
            pass
    return value


def booster_params(hyperparameters):
    params = {k: number(v) for k, v in hyperparameters.items() if k not in NOT_BOOSTER}
    params.setdefault("objective", "reg:squarederror")
    params.setdefault("verbosity", 1)
    return params


def channel_files(channel):
    directory = os.path.join(DATA_DIR, channel)
    files = sorted(
        os.path.join(root, name)
        for root, _, names in os.walk(directory)
        for name in names
        if not name.startswith(".")
    )
    if not files:
        raise ClientError(f"No data in the {channel} channel ({directory}).")
    return files


def content_type_of(channel, data_config):
    raw = (data_config.get(channel, {}).get("ContentType") or "text/libsvm").split(";")[0].strip().lower()
    if raw in ("csv", "text/csv"):
        return "text/csv"
    if raw in ("libsvm", "text/libsvm", "text/x-libsvm"):
        return "text/libsvm"
    raise ClientError(f"Content type {raw} is not supported for the {channel} channel: use text/csv or text/libsvm.")


def load_matrix(xgb, channel, data_config):
    files = channel_files(channel)
    kind = content_type_of(channel, data_config)
    # One file for XGBoost to read, whatever the channel's layout.
    with tempfile.NamedTemporaryFile("wb", delete=False, suffix="." + kind.split("/")[1]) as joined:
        for path in files:
            with open(path, "rb") as f:
                data = f.read()
            joined.write(data if data.endswith(b"\n") or not data else data + b"\n")
    try:
        if kind == "text/csv":
            return xgb.DMatrix(f"{joined.name}?format=csv&label_column=0")
        return xgb.DMatrix(f"{joined.name}?format=libsvm")
    except xgb.core.XGBoostError as e:
        raise ClientError(f"Unable to read the {channel} channel as {kind}: {str(e).splitlines()[0]}")
    finally:
        os.unlink(joined.name)


def check_request(hyperparameters, data_config):
    """What the algorithm needs before it reads any data; the rounds to train."""
    if "num_round" not in hyperparameters:
        raise ClientError("Missing required hyperparameter: num_round")
    num_round = number(hyperparameters["num_round"])
    if not isinstance(num_round, int) or num_round < 1:
        raise ClientError(f"Hyperparameter num_round must be a positive integer, not {hyperparameters['num_round']}")
    if "train" not in data_config and not os.path.isdir(os.path.join(DATA_DIR, "train")):
        raise ClientError("Channel train is required by the XGBoost algorithm.")
    for channel in data_config:
        if channel in ("train", "validation"):
            content_type_of(channel, data_config)
    return num_round


def train():
    hyperparameters = read_json("hyperparameters.json")
    data_config = read_json("inputdataconfig.json")
    try:
        num_round = check_request(hyperparameters, data_config)
    except ClientError as e:
        fail(f"ClientError: {e}")
    import xgboost as xgb

    try:
        dtrain = load_matrix(xgb, "train", data_config)
        evals = [(dtrain, "train")]
        if "validation" in data_config or os.path.isdir(os.path.join(DATA_DIR, "validation")):
            evals.append((load_matrix(xgb, "validation", data_config), "validation"))
        params = booster_params(hyperparameters)
        early = hyperparameters.get("early_stopping_rounds")
        print(f"cove xgboost: training {num_round} rounds with {json.dumps(params, sort_keys=True)}", flush=True)
        booster = xgb.train(
            params, dtrain, num_boost_round=num_round, evals=evals,
            early_stopping_rounds=number(early) if early is not None else None, verbose_eval=True,
        )
    except ClientError as e:
        fail(f"ClientError: {e}")
    except xgb.core.XGBoostError as e:
        fail(f"ClientError: {str(e).splitlines()[0]}")
    os.makedirs(MODEL_DIR, exist_ok=True)
    booster.save_model(os.path.join(MODEL_DIR, MODEL_FILE))
    print(f"cove xgboost: model saved as {os.path.join(MODEL_DIR, MODEL_FILE)}", flush=True)


# ---- serving hooks, found by Cove's serving runtime ----

def model_fn(model_dir):
    import xgboost as xgb

    booster = xgb.Booster()
    booster.load_model(os.path.join(model_dir, MODEL_FILE))
    return booster


def input_fn(body, content_type):
    import xgboost as xgb

    kind = (content_type or "text/csv").split(";")[0].strip().lower()
    text = body.decode("utf-8") if isinstance(body, bytes) else body
    suffix = {"text/csv": "csv", "text/libsvm": "libsvm", "text/x-libsvm": "libsvm"}.get(kind)
    if suffix is None:
        raise UnsupportedMediaType(f"Content type {content_type} is not supported: use text/csv or text/libsvm.")
    with tempfile.NamedTemporaryFile("w", delete=False, suffix="." + suffix) as f:
        f.write(text if text.endswith("\n") else text + "\n")
    try:
        return xgb.DMatrix(f"{f.name}?format={suffix}")
    finally:
        os.unlink(f.name)


def predict_fn(data, model):
    return model.predict(data)


def output_fn(prediction, accept):
    accept = (accept or "text/csv").split(",")[0].split(";")[0].strip().lower()
    values = prediction.tolist()
    if accept == "application/json":
        return json.dumps({"predictions": [{"score": v} for v in values]}), "application/json"
    if accept in ("text/csv", "*/*"):
        if values and isinstance(values[0], list):
            return "\n".join(",".join(str(x) for x in row) for row in values), "text/csv"
        return ",".join(str(v) for v in values), "text/csv"
    raise UnsupportedMediaType(f"Accept type {accept} is not supported: use text/csv or application/json.")


if __name__ == "__main__":
    if sys.argv[1:] == ["train"]:
        train()
    else:
        sys.exit(f"usage: {sys.argv[0]} train")
