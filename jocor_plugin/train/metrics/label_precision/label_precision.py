"""Label precision (Han et al., 2018; Wei et al., 2020): the fraction of the samples a network
selected for training whose (noisy) label is correct, i.e. precision of "selected" as a
predictor of "clean". Shipped with the package as an `evaluate` module."""
import datasets
import evaluate
import numpy as np

_DESCRIPTION = "(# selected samples with a clean label) / (# selected samples)."


class LabelPrecision(evaluate.Metric):
    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description=_DESCRIPTION, citation="",
            inputs_description="predictions: 1 if the sample was selected; references: 1 if its label is clean",
            features=datasets.Features({"predictions": datasets.Value("int8"),
                                        "references": datasets.Value("int8")}))

    def _compute(self, predictions, references):
        selected, clean = np.asarray(predictions, bool), np.asarray(references, bool)
        n = int(selected.sum())
        return {"label_precision": float((selected & clean).sum() / n) if n else float("nan"),
                "num_selected": n}
