"""clarify.py's bias metrics against hand-computed values."""

import importlib.util
import math
import pathlib
import unittest

GUEST = pathlib.Path(__file__).resolve().parent.parent
spec = importlib.util.spec_from_file_location("clarify", GUEST / "clarify.py")
clarify = importlib.util.module_from_spec(spec)
spec.loader.exec_module(clarify)


class PreTraining(unittest.TestCase):
    def test_metrics_of_a_small_dataset(self):
        # Group a (facet False): 3 rows, 2 positive; group d (facet True): 1 row, 0 positive.
        labels = [True, True, False, False]
        facet = [False, False, False, True]
        m = clarify.pre_training(labels, facet)
        self.assertAlmostEqual(m["CI"], (3 - 1) / 4)
        self.assertAlmostEqual(m["DPL"], 2 / 3 - 0)
        # KL over classes where both are non-zero: only the negative class.
        self.assertAlmostEqual(m["KL"], (1 / 3) * math.log((1 / 3) / 1))
        self.assertGreaterEqual(m["JS"], 0)

    def test_a_facet_selecting_every_row_is_refused(self):
        with self.assertRaises(clarify.Failure):
            clarify.pre_training([True, False], [True, True])

    def test_values_match_as_numbers_or_strings(self):
        self.assertTrue(clarify.matches("1.0", [1]))
        self.assertTrue(clarify.matches("yes", ["yes"]))
        self.assertFalse(clarify.matches("2", [1, "1"]))


class PostTraining(unittest.TestCase):
    def test_disparate_impact_is_the_ratio_of_positive_rates(self):
        m = clarify.post_training([True, False, True, True], [False, False, True, True])
        self.assertAlmostEqual(m["DPPL"], 0.5 - 1.0)
        self.assertAlmostEqual(m["DI"], 1.0 / 0.5)


if __name__ == "__main__":
    unittest.main()
