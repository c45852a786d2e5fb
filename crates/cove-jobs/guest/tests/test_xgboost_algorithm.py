"""xgboost_algorithm.py's checks and conversions, which need no xgboost (the
host's Python has none; the e2e test trains with the real package)."""

import importlib.util
import pathlib
import unittest

GUEST = pathlib.Path(__file__).resolve().parent.parent
spec = importlib.util.spec_from_file_location("xgboost_algorithm", GUEST / "xgboost_algorithm.py")
algorithm = importlib.util.module_from_spec(spec)
spec.loader.exec_module(algorithm)


class Request(unittest.TestCase):
    def test_num_round_is_required_and_a_positive_integer(self):
        with self.assertRaisesRegex(algorithm.ClientError, "Missing required hyperparameter: num_round"):
            algorithm.check_request({}, {"train": {}})
        with self.assertRaisesRegex(algorithm.ClientError, "positive integer"):
            algorithm.check_request({"num_round": "1.5"}, {"train": {}})
        self.assertEqual(algorithm.check_request({"num_round": "20"}, {"train": {}}), 20)

    def test_the_train_channel_is_required(self):
        with self.assertRaisesRegex(algorithm.ClientError, "Channel train is required"):
            algorithm.check_request({"num_round": "5"}, {"validation": {}})

    def test_content_types_are_csv_or_libsvm_and_libsvm_by_default(self):
        self.assertEqual(algorithm.content_type_of("train", {"train": {"ContentType": "text/csv; label_size=1"}}), "text/csv")
        self.assertEqual(algorithm.content_type_of("train", {"train": {}}), "text/libsvm")
        with self.assertRaisesRegex(algorithm.ClientError, "application/json is not supported"):
            algorithm.check_request({"num_round": "5"}, {"train": {"ContentType": "application/json"}})

    def test_hyperparameters_become_typed_booster_parameters(self):
        params = algorithm.booster_params({"num_round": "10", "max_depth": "3", "eta": "0.3",
                                           "objective": "binary:logistic", "early_stopping_rounds": "2"})
        self.assertEqual(params, {"max_depth": 3, "eta": 0.3, "objective": "binary:logistic", "verbosity": 1})
        self.assertEqual(algorithm.booster_params({})["objective"], "reg:squarederror")


if __name__ == "__main__":
    unittest.main()
