"""Unit tests of Cove's training toolkit (guest/training.py), run with the
host's Python: how a failed step is reported, and a real run of a script
that fails and one that succeeds."""
import importlib.util
import json
import os
import sys
import tempfile
import time
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


IMAGE_KEY = training.IMAGE_KEY


def read(path):
    with open(path) as f:
        return f.read()


class Mpi(unittest.TestCase):
    def setUp(self):
        self.dir = tempfile.mkdtemp()
        training.MPI_DIR = os.path.join(self.dir, "mpi")
        os.environ["SM_FRAMEWORK_PARAMS"] = json.dumps({
            "sagemaker_mpi_enabled": True, "sagemaker_mpi_num_of_processes_per_host": 2,
            "sagemaker_mpi_custom_mpi_options": "-x FOO=1 --verbose"})

    def tearDown(self):
        os.environ["SM_FRAMEWORK_PARAMS"] = "{}"
        training.IMAGE_KEY = IMAGE_KEY

    def env(self, current):
        return {"SM_USER_ENTRY_POINT": "train.py", "SM_USER_ARGS": '["--epochs", "2"]',
                "SM_HOSTS": '["algo-1", "algo-2", "algo-3"]', "SM_CURRENT_HOST": current,
                "HOSTNAME": "algo-1", "PYTHONPATH": "/opt/ml/code"}

    def test_the_first_host_runs_the_toolkits_mpirun_over_every_host(self):
        self.assertTrue(training.mpi_enabled())
        command = training.mpi_command("/usr/bin/python3", self.env("algo-1"))
        self.assertEqual(command[:5], ["mpirun", "--host", "algo-1:2,algo-2:2,algo-3:2", "-np", "6"])
        joined = " ".join(command)
        for option in ("-mca btl_tcp_if_include eth0", "-mca plm_rsh_no_tree_spawn 1",
                       "-mca btl_vader_single_copy_mechanism none", "--leave-session-attached",
                       f"-mca plm_rsh_args -F {training.MPI_DIR}/ssh_config",
                       "-x NCCL_SOCKET_IFNAME=eth0 -x NCCL_DEBUG=INFO -x FOO=1 --verbose"):
            self.assertIn(option, joined)
        agent = command[command.index("orte_launch_agent") + 1]
        self.assertTrue(agent.startswith("/usr/bin/python3 /") and agent.endswith("training.py orted"), agent)
        # The job's environment goes to every rank, the host's own names do not.
        self.assertIn("-x PYTHONPATH", joined)
        self.assertIn("-x SM_HOSTS", joined)
        self.assertNotIn("-x HOSTNAME", joined)
        self.assertEqual(command[-6:], ["/usr/bin/python3", "-m", "mpi4py", "train.py", "--epochs", "2"])

    def test_the_orted_wrapper_leaves_its_exit_code_for_the_worker(self):
        bin_dir = os.path.join(self.dir, "bin")
        os.makedirs(bin_dir)
        with open(os.path.join(bin_dir, "orted"), "w") as f:
            f.write("#!/bin/sh\n[ \"$1\" = --hnp-uri ] && exit 3\nexit 9\n")
        os.chmod(os.path.join(bin_dir, "orted"), 0o755)
        path = os.environ["PATH"]
        os.environ["PATH"] = bin_dir + ":" + path
        try:
            with self.assertRaises(SystemExit) as ended:
                training.run_orted(["--hnp-uri", "x"])
        finally:
            os.environ["PATH"] = path
        self.assertEqual(ended.exception.code, 3)
        self.assertEqual(read(training.mpi_file("orted.ended")), "3")

    def test_a_worker_serves_until_the_orted_mpirun_started_on_it_has_ended(self):
        import threading
        started = []
        sshd, training.start_sshd = training.start_sshd, lambda: started.append(True)
        try:
            os.makedirs(training.MPI_DIR)
            def orted_ends():
                with open(training.mpi_file("orted.ended"), "w") as f:
                    f.write("0")
            timer = threading.Timer(0.5, orted_ends)
            timer.start()
            began = time.monotonic()
            training.run_mpi("/usr/bin/python3", self.env("algo-2"))
            self.assertGreaterEqual(time.monotonic() - began, 0.4)
            self.assertEqual(started, [True])
        finally:
            training.start_sshd = sshd

    def test_an_image_without_sshd_or_key_pair_fails_as_a_script_error(self):
        failure = os.path.join(self.dir, "failure")
        training.FAILURE_FILE, training.IMAGE_KEY = failure, os.path.join(self.dir, "no-key")
        with self.assertRaises(SystemExit) as ended:
            training.run_mpi("/usr/bin/python3", self.env("algo-1"))
        self.assertEqual(ended.exception.code, 1)
        text = read(failure)
        self.assertTrue(text.startswith("ExecuteUserScriptError:\nExitCode 1\n"), text)
        self.assertIn("needs an image built with OpenMPI and OpenSSH", text)


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
        text = read(self.failure)
        self.assertEqual(text, training.failure_text(
            "ExecuteUserScriptError", 1, "ValueError: bad 0.1", f"{sys.executable} train.py --lr 0.1"))

    def test_a_failure_file_of_the_script_is_kept(self):
        code = self.run_main(
            f"import os\nos.makedirs(os.path.dirname({self.failure!r}), exist_ok=True)\n"
            f"open({self.failure!r}, 'w').write('the loss diverged')\nraise SystemExit(3)\n", [])
        self.assertEqual(code, 3)
        self.assertEqual(read(self.failure), "the loss diverged")

    def test_a_script_that_succeeds_sees_its_arguments_and_path(self):
        out = os.path.join(self.dir, "seen.json")
        code = self.run_main(
            f"import json, os, sys\njson.dump([sys.argv[1:], os.getcwd(), os.environ['PYTHONPATH'].split(':')[:2]], open({out!r}, 'w'))\n",
            ["--epochs", "2"])
        self.assertEqual(code, 0)
        argv, cwd, path = json.loads(read(out))
        self.assertEqual(argv, ["--epochs", "2"])
        self.assertEqual(cwd, self.code)
        self.assertEqual(path, [training.PACKAGES_DIR, self.code])
        self.assertFalse(os.path.exists(self.failure))


if __name__ == "__main__":
    unittest.main()
