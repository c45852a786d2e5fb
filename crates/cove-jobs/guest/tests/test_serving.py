"""serving.py on its own: the default handlers, and the real server on
loopback with a user script, as a serving container runs it."""

import contextlib
import http.client
import io
import importlib.util
import json
import os
import pathlib
import sys
import tempfile
import threading
import unittest

GUEST = pathlib.Path(__file__).resolve().parent.parent


def load(name):
    spec = importlib.util.spec_from_file_location(name, GUEST / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


serving = load("serving")


class DefaultHandlers(unittest.TestCase):
    def test_csv_in_becomes_rows_of_numbers(self):
        self.assertEqual(serving.default_input_fn(b"1,2\n3,x\n", "text/csv"), [[1.0, 2.0], [3.0, "x"]])

    def test_json_is_the_default_content_type(self):
        self.assertEqual(serving.default_input_fn(b'{"a": 1}', None), {"a": 1})

    def test_unknown_types_are_refused(self):
        with self.assertRaises(serving.UnsupportedMediaType):
            serving.default_input_fn(b"", "image/png")
        with self.assertRaises(serving.UnsupportedMediaType):
            serving.default_output_fn([1], "image/png")

    def test_csv_out_writes_one_row_per_prediction(self):
        self.assertEqual(serving.default_output_fn([1, [2, 3]], "text/csv"), ("1\n2,3\n", "text/csv"))
        self.assertEqual(serving.default_output_fn({"p": 1}, "*/*"), ('{"p": 1}', "application/json"))


USER_SCRIPT = '''
def model_fn(model_dir):
    return lambda rows: [sum(r) for r in rows]

def output_fn(prediction, accept, context):
    context.response_headers["X-Amzn-SageMaker-Custom-Attributes"] = "summed"
    return ",".join(str(p) for p in prediction), "text/csv"
'''


class LiveServer(unittest.TestCase):
    def setUp(self):
        self.dir = tempfile.TemporaryDirectory()
        pathlib.Path(self.dir.name, "inference.py").write_text(USER_SCRIPT)
        self.env = dict(os.environ)
        os.environ["SAGEMAKER_PROGRAM"] = "inference.py"
        os.environ["SAGEMAKER_SUBMIT_DIRECTORY"] = self.dir.name
        serving.MODEL = serving.Model()
        self.server = serving.Server(("127.0.0.1", 0), serving.Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def tearDown(self):
        self.server.shutdown()
        self.server.server_close()
        os.environ.clear()
        os.environ.update(self.env)
        sys.path[:] = [p for p in sys.path if p != self.dir.name]
        self.dir.cleanup()

    def request(self, conn, method, path, body=None, headers=None):
        conn.request(method, path, body=body, headers=headers or {})
        r = conn.getresponse()
        return r.status, dict(r.getheaders()), r.read()

    def test_ping_then_invocations_on_one_kept_alive_connection(self):
        conn = http.client.HTTPConnection("127.0.0.1", self.server.server_address[1], timeout=5)
        self.addCleanup(conn.close)
        self.assertEqual(self.request(conn, "GET", "/ping")[0], 200)
        status, headers, body = self.request(
            conn, "POST", "/invocations", b"1,2\n3,4\n", {"Content-Type": "text/csv"}
        )
        self.assertEqual((status, body), (200, b"3.0,7.0"))
        self.assertEqual(headers["Content-Type"], "text/csv")
        self.assertEqual(headers["X-Amzn-SageMaker-Custom-Attributes"], "summed")
        status, _, body = self.request(conn, "GET", "/execution-parameters")
        self.assertEqual(status, 200)
        self.assertEqual(json.loads(body)["BatchStrategy"], "MULTI_RECORD")

    def test_an_unsupported_type_is_415_and_a_model_error_500(self):
        conn = http.client.HTTPConnection("127.0.0.1", self.server.server_address[1], timeout=5)
        self.addCleanup(conn.close)
        status, _, _ = self.request(conn, "POST", "/invocations", b"x", {"Content-Type": "image/png"})
        self.assertEqual(status, 415)
        with contextlib.redirect_stderr(io.StringIO()) as log:
            status, _, body = self.request(conn, "POST", "/invocations", b'"text"', {"Content-Type": "application/json"})
        self.assertIn("Traceback", log.getvalue())
        self.assertEqual(status, 500)
        self.assertIn(b"TypeError", body)


if __name__ == "__main__":
    unittest.main()
