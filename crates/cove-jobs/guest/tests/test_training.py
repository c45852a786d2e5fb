"""Unit tests of Cove's training toolkit (guest/training.py), run with the
host's Python: how a failed step is reported, and a real run of a script
that fails and one that succeeds."""
import importlib.util
import json
import os
import sys
import tempfile
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
spec = importlib.util.spec_from_file_location("cove_training", os.path.join(HERE, "..", "training.py"))
training = importlib.util.module_from_spec(spec)
spec.loader.exec_module(training)


class ErrorMessages(unittest.TestCase):
    def test_the_exception_that_ended_a_traceback(self):
        lines = ["starting\n", "Traceback (most recent call last):\n",
                 '  File "train.py", line 1, in <module>\n', "    import numpy\n",
                 "ModuleNotFoundError: No module named 'numpy'\n"]
        self.assertEqual(training.error_message(lines), "ModuleNotFoundError: No module named 'numpy'")

    def test_the_last_lines_without_a_traceback(self):
        lines = [f"line {i}\n" for i in range(10)]
        self.assertEqual(training.error_message(lines), "line 5\nline 6\nline 7\nline 8\nline 9")

    def test_long_messages_keep_their_end(self):
        message = training.error_message(["x" * 2000 + "END\n"])
        self.assertTrue(message.startswith("...") and message.endswith("END"))
        self.assertLessEqual(len(message), training.MAX_ERROR_MESSAGE + 3)

    def test_failure_text_is_the_toolkits(self):
        self.assertEqual(
            training.failure_text("ExecuteUserScriptError", 1, "ValueError: x", "/usr/bin/python3 train.py --a 1"),
            'ExecuteUserScriptError:\nExitCode 1\nErrorMessage "ValueError: x"\nCommand "/usr/bin/python3 train.py --a 1"')


class Commands(unittest.TestCase):
    def env(self, **extra):
        return {"SM_USER_ENTRY_POINT": "train.py", "SM_USER_ARGS": '["--epochs", "2"]',
                "SM_HOSTS": '["algo-1", "algo-2"]', "SM_CURRENT_HOST": "algo-2", **extra}

    def test_a_plain_script(self):
        os.environ["SM_FRAMEWORK_PARAMS"] = "{}"
        self.assertEqual(training.script_command("/usr/bin/python3", self.env()),
                         ["/usr/bin/python3", "train.py", "--epochs", "2"])

    def test_torch_distributed_and_pytorchddp_run_torchrun_on_every_host(self):
        for launcher in ("sagemaker_torch_distributed_enabled", "sagemaker_pytorch_ddp_enabled"):
            os.environ["SM_FRAMEWORK_PARAMS"] = json.dumps({launcher: True})
            env = self.env()
            try:
                command = training.script_command("/usr/bin/python3", env)
            finally:
                os.environ["SM_FRAMEWORK_PARAMS"] = "{}"
            self.assertEqual(command, [
                "/usr/bin/python3", "-m", "torch.distributed.run", "--nnodes", "2", "--nproc_per_node", "1",
                "--redirects", "1", "--tee", "1", "--node_rank", "1", "--master_addr", "algo-1", "--master_port", "7777",
                "train.py", "--epochs", "2"], launcher)
            self.assertEqual((env["MASTER_ADDR"], env["MASTER_PORT"]), ("algo-1", "7777"))


class Runs(unittest.TestCase):
    def setUp(self):
        self.dir = tempfile.mkdtemp()
        self.code = os.path.join(self.dir, "code")
        os.makedirs(self.code)
        self.failure = os.path.join(self.dir, "output", "failure")
        training.CODE_DIR = self.code
        training.PACKAGES_DIR = os.path.join(self.code, ".cove-packages")
        training.FAILURE_FILE = self.failure

    def run_main(self, script, args):
        with open(os.path.join(self.code, "train.py"), "w") as f:
            f.write(script)
        os.environ["SM_USER_ENTRY_POINT"] = "train.py"
        os.environ["SM_USER_ARGS"] = json.dumps(args)
        try:
            training.main()
            return 0
        except SystemExit as e:
            return e.code

    def test_a_failing_script_is_reported_with_its_command(self):
        code = self.run_main("import sys\nraise ValueError('bad ' + sys.argv[2])\n", ["--lr", "0.1"])
        self.assertEqual(code, 1)
        text = open(self.failure).read()
        self.assertEqual(text, training.failure_text(
            "ExecuteUserScriptError", 1, "ValueError: bad 0.1", f"{sys.executable} train.py --lr 0.1"))

    def test_a_failure_file_of_the_script_is_kept(self):
        code = self.run_main(
            f"import os\nos.makedirs(os.path.dirname({self.failure!r}), exist_ok=True)\n"
            f"open({self.failure!r}, 'w').write('the loss diverged')\nraise SystemExit(3)\n", [])
        self.assertEqual(code, 3)
        self.assertEqual(open(self.failure).read(), "the loss diverged")

    def test_a_script_that_succeeds_sees_its_arguments_and_path(self):
        out = os.path.join(self.dir, "seen.json")
        code = self.run_main(
            f"import json, os, sys\njson.dump([sys.argv[1:], os.getcwd(), os.environ['PYTHONPATH'].split(':')[:2]], open({out!r}, 'w'))\n",
            ["--epochs", "2"])
        self.assertEqual(code, 0)
        argv, cwd, path = json.load(open(out))
        self.assertEqual(argv, ["--epochs", "2"])
        self.assertEqual(cwd, self.code)
        self.assertEqual(path, [training.PACKAGES_DIR, self.code])
        self.assertFalse(os.path.exists(self.failure))


if __name__ == "__main__":
    unittest.main()
