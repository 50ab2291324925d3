# Copyright 2025 The llave-hf Authors. Licensed under the Apache License, Version 2.0.
"""`evaluate` wrapper around `llave_hf.metrics`: ranking metrics of per-query candidate score lists."""

import datasets
import evaluate

from llave_hf.metrics import retrieval_metrics, similarity_stats


_CITATION = """\
@inproceedings{lan2025llave,
  title={LLaVE: Large Language and Vision Embedding Models with Hardness-Weighted Contrastive Learning},
  author={Lan, Zhibin and Niu, Liqiang and Meng, Fandong and Zhou, Jie and Su, Jinsong},
  booktitle={Findings of the Association for Computational Linguistics: EMNLP 2025},
  year={2025}
}
@inproceedings{jiang2025vlm2vec,
  title={VLM2Vec: Training Vision-Language Models for Massive Multimodal Embedding Tasks},
  author={Jiang, Ziyan and Meng, Rui and Yang, Xinyi and Yavuz, Semih and Zhou, Yingbo and Chen, Wenhu},
  booktitle={International Conference on Learning Representations},
  year={2025}
}
"""

_DESCRIPTION = """\
Ranking metrics for embedding retrieval in the MMEB protocol: every query scores its own candidate list and exactly
one candidate is relevant. Returns Precision@1 (the MMEB score), Recall@k, MRR and the cosine diagnostics of the
LLaVE paper (Table 1): mean positive score, mean hardest-negative score, their gap, and the mean of all negatives.
Ties are broken pessimistically: a negative scoring exactly as high as the positive ranks above it.
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions (`list` of `list` of `float`): one score list per query (higher is better, e.g. cosines);
        lists may differ in length.
    references (`list` of `int`): index of the relevant candidate in each list (0 in MMEB files).
    k_values (`list` of `int`, defaults to `[1, 5, 10]`): cut-offs of Recall@k; k larger than a list counts as a hit.
Returns:
    precision@1, recall@k for each k, mrr (fractions in [0, 1]), num_queries, positive_mean,
    hardest_negative_mean, negative_mean, gap.
Examples:
    >>> metric = evaluate.load("llave_hf/evaluate_metrics/llave_retrieval")
    >>> results = metric.compute(predictions=[[0.9, 0.1, 0.3], [0.2, 0.8, 0.1]], references=[0, 0], k_values=[2])
    >>> results["precision@1"], results["recall@2"], results["mrr"]
    (0.5, 1.0, 0.75)
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class LlaveRetrieval(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {"predictions": datasets.Sequence(datasets.Value("float64")), "references": datasets.Value("int64")}
            ),
            reference_urls=["https://arxiv.org/abs/2503.04812", "https://arxiv.org/abs/2410.05160"],
        )

    def _compute(self, predictions, references, k_values=(1, 5, 10)):
        return {**retrieval_metrics(predictions, references, k_values), **similarity_stats(predictions, references)}
