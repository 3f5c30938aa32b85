"""Evaluation: sampling n responses per problem, avg@k / pass@k / maj@k scoring, comparison (docs/methods.md §9).

Public interface (docs/methods.md §10): `pass_at_k(n, c, k)`, `score_samples(...)`. The command line is
`siren-verl eval` (`siren_verl.eval.cli:main`). Nothing heavy (torch, transformers, vllm) is
imported here.
"""

from siren_verl.eval.metrics import (
    AnswerClusters,
    avg_at_k,
    cluster_answers,
    distinct_ngram_ratio,
    maj_at_k,
    majority_cluster,
    normalize_answer,
    pass_at_k,
)
from siren_verl.eval.scoring import default_ks, markdown_tables, score_problem, score_samples, write_report

__all__ = [
    "AnswerClusters",
    "avg_at_k",
    "cluster_answers",
    "default_ks",
    "distinct_ngram_ratio",
    "maj_at_k",
    "majority_cluster",
    "markdown_tables",
    "normalize_answer",
    "pass_at_k",
    "score_problem",
    "score_samples",
    "write_report",
]
