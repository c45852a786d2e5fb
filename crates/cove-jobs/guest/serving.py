"""Cove's serving runtime for framework images in script mode.

SageMaker's framework containers (scikit-learn, PyTorch, ...) serve a model by
loading the user's inference script and calling its handlers. Cove cannot run
those images, so this runtime does the same with the host's Python (standard
library only): it imports the script named by SAGEMAKER_PROGRAM, calls
`model_fn(model_dir)` once, and answers

  GET  /ping                  200 once the model is loaded
  GET  /execution-parameters  what batch transform may send at once
  POST /invocations           transform_fn(model, body, content_type, accept), or
                              output_fn(predict_fn(input_fn(body, content_type), model), accept)

on port 8080, as the SageMaker hosting contract requires. Handlers that are
not defined fall back to the defaults of the SageMaker inference toolkit:
JSON, CSV and plain text in and out (and NPY when numpy is importable).
A handler that declares a `context` parameter gets the request's headers and
can set response headers (`context.response_headers`), such as
`X-Amzn-SageMaker-Custom-Attributes`.
"""

import csv
import importlib.util
import inspect
import io
import json
import os
import sys
import traceback
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

MODEL_DIR = "/opt/ml/model"
PORT = int(os.environ.get("SAGEMAKER_BIND_TO_PORT", "8080"))


class UnsupportedMediaType(Exception):
    pass


class Context:
    def __init__(self, headers):
        self.request_headers = headers
        self.response_headers = {}


def code_dir(program):
    candidates = ["/opt/ml/code", os.path.join(MODEL_DIR, "code")]
    submit = os.environ.get("SAGEMAKER_SUBMIT_DIRECTORY", "")
    if submit.startswith("/"):
        candidates.insert(0, submit)
    for d in candidates:
        if os.path.isfile(os.path.join(d, program)):
            return d
    raise SystemExit(f"cove serving: {program} not found in {', '.join(candidates)}")


# A built-in algorithm beside this file serves its own models: a model
# directory holding its model file and no SAGEMAKER_PROGRAM.
BUILT_IN = {"xgboost-model": "xgboost_algorithm.py"}


def built_in_algorithm():
    here = os.path.dirname(os.path.abspath(__file__))
    for model_file, program in BUILT_IN.items():
        path = os.path.join(here, program)
        if os.path.exists(os.path.join(MODEL_DIR, model_file)) and os.path.exists(path):
            return path
    return None


def load_module(name, path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def load_user_module():
    program = os.environ.get("SAGEMAKER_PROGRAM", "")
    if not program:
        built_in = built_in_algorithm()
        return load_module("built_in_algorithm", built_in) if built_in else None
    directory = code_dir(program)
    sys.path.insert(0, directory)
    name = program[:-3] if program.endswith(".py") else program
    return load_module(name, os.path.join(directory, program))


def numpy():
    try:
        import numpy as np

        return np
    except ImportError:
        return None


def default_input_fn(body, content_type):
    ct = (content_type or "application/json").split(";")[0].strip().lower()
    if ct == "application/json":
        return json.loads(body.decode("utf-8"))
    if ct == "text/csv":
        rows = list(csv.reader(io.StringIO(body.decode("utf-8"))))
        return [[as_number(v) for v in row] for row in rows if row]
    if ct == "text/plain":
        return body.decode("utf-8")
    if ct == "application/x-npy" and numpy():
        return numpy().load(io.BytesIO(body), allow_pickle=False)
    if ct == "application/octet-stream":
        return body
    raise UnsupportedMediaType(f"Content type {content_type} is not supported by this framework.")


def as_number(v):
    try:
        return float(v)
    except ValueError:
        return v


def plain(value):
    return value.tolist() if hasattr(value, "tolist") else value


def default_output_fn(prediction, accept):
    accept = (accept or "application/json").split(",")[0].split(";")[0].strip().lower()
    if accept in ("application/json", "*/*"):
        return json.dumps(plain(prediction)), "application/json"
    if accept == "text/csv":
        out = io.StringIO()
        rows = plain(prediction)
        rows = rows if isinstance(rows, list) else [rows]
        writer = csv.writer(out, lineterminator="\n")
        for row in rows:
            writer.writerow(row if isinstance(row, list) else [row])
        return out.getvalue(), "text/csv"
    if accept == "text/plain":
        return str(plain(prediction)), "text/plain"
    if accept == "application/x-npy" and numpy():
        buf = io.BytesIO()
        numpy().save(buf, numpy().asarray(prediction))
        return buf.getvalue(), "application/x-npy"
    raise UnsupportedMediaType(f"Accept type {accept} is not supported by this framework.")


def default_predict_fn(data, model):
    if model is None:
        return data
    if hasattr(model, "predict"):
        return model.predict(data)
    return model(data)


def call(fn, *args, context=None):
    try:
        takes_context = "context" in inspect.signature(fn).parameters
    except (TypeError, ValueError):
        takes_context = False
    return fn(*args, context=context) if takes_context else fn(*args)


class Model:
    def __init__(self):
        self.user = load_user_module()
        model_fn = getattr(self.user, "model_fn", None)
        self.model = model_fn(MODEL_DIR) if model_fn else None

    def handler(self, name, default):
        return getattr(self.user, name, None) or default

    def invoke(self, body, content_type, accept, context):
        transform_fn = getattr(self.user, "transform_fn", None)
        if transform_fn:
            result = call(transform_fn, self.model, body, content_type, accept, context=context)
        else:
            data = call(self.handler("input_fn", default_input_fn), body, content_type, context=context)
            prediction = call(self.handler("predict_fn", default_predict_fn), data, self.model, context=context)
            result = call(self.handler("output_fn", default_output_fn), prediction, accept, context=context)
        if isinstance(result, tuple):
            payload, out_type = result
        else:
            payload, out_type = result, accept or "application/json"
        if isinstance(payload, str):
            payload = payload.encode("utf-8")
        return payload, out_type


MODEL = None


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Headers and body are separate writes: without this, Nagle's algorithm
    # holds the body until the client's delayed ACK (40 ms per request).
    disable_nagle_algorithm = True

    def log_message(self, fmt, *args):
        pass

    def reply(self, status, body, content_type="text/plain", headers=None):
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        # One write for the head and the body.
        self._headers_buffer.append(b"\r\n")
        self.wfile.write(b"".join(self._headers_buffer) + body)
        self._headers_buffer = []

    def do_GET(self):
        if self.path == "/ping":
            self.reply(200, b"")
        elif self.path == "/execution-parameters":
            params = {"MaxConcurrentTransforms": os.cpu_count() or 1, "BatchStrategy": "MULTI_RECORD", "MaxPayloadInMB": 6}
            self.reply(200, json.dumps(params).encode(), "application/json")
        else:
            self.reply(404, b"Not Found")

    def do_POST(self):
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length)
        if self.path != "/invocations":
            self.reply(404, b"Not Found")
            return
        context = Context(self.headers)
        try:
            payload, out_type = MODEL.invoke(
                body, self.headers.get("Content-Type"), self.headers.get("Accept"), context
            )
            self.reply(200, payload, out_type, context.response_headers)
        except UnsupportedMediaType as e:
            self.reply(415, str(e).encode())
        except Exception as e:  # the model's own failure: 500 with its message, traceback in the log
            # A built-in algorithm's own UnsupportedMediaType (it cannot import this file's).
            if type(e).__name__ == "UnsupportedMediaType":
                self.reply(415, str(e).encode())
                return
            traceback.print_exc()
            self.reply(500, f"{type(e).__name__}: {e}".encode(), "text/plain", context.response_headers)


class Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 256


def main():
    global MODEL
    program = os.environ.get("SAGEMAKER_PROGRAM") or built_in_algorithm() or "(no program)"
    print(f"cove serving: loading {program}", flush=True)
    MODEL = Model()
    server = Server(("0.0.0.0", PORT), Handler)
    print(f"cove serving: listening on port {PORT}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
