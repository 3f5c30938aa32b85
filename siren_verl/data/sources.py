"""The training and evaluation sets `siren-verl prepare-data` knows (docs/methods.md §9).

| name            | kind  | default source (Hugging Face hub)           | config / split               | schema used                                      | sure? |
|-----------------|-------|---------------------------------------------|------------------------------|--------------------------------------------------|-------|
| openr1_math_46k | train | Elliott/Openr1-Math-46k-8192                | - / train                    | prompt (chat, last user turn), reward_model.ground_truth | yes (LUFFY/SIREN set; schema from third-party notes) |
| dapo_math_17k   | train | BytedTsinghua-SIA/DAPO-Math-17k             | - / train                    | prompt (chat, DAPO "Solve ... Answer:" wrapper stripped), reward_model.ground_truth; ~1.79M rows = 17k problems repeated, deduped | yes |
| math            | train | DigitalLearningGmbH/MATH-lighteval          | - / train                    | problem, solution (answer = last \\boxed)        | yes (mirror of the withdrawn lighteval/MATH; verl's default scorer names both) |
| aime24          | eval  | HuggingFaceH4/aime_2024                     | - / train                    | problem, answer                                  | yes |
| aime25          | eval  | yentinglin/aime_2025                        | - / train                    | problem, answer                                  | fairly (lighteval uses it; math-ai/aime25 split test is an alternative) |
| amc23           | eval  | zwhe99/amc23                                | - / test                     | question, answer (floats like 27.0 -> "27")      | unsure (math-ai/amc23 split test is an alternative) |
| math500         | eval  | HuggingFaceH4/MATH-500                      | - / test                     | problem, answer                                  | yes |
| olympiadbench   | eval  | Hothan/OlympiadBench                        | OE_TO_maths_en_COMP / train  | question, final_answer (list)                    | fairly (mirror of OpenBMB's release; English text-only maths subset, 675 problems) |
| minerva         | eval  | math-ai/minervamath                         | - / test                     | question, answer                                 | unsure |

Every loader accepts any of the usual column spellings, so a mirror with another schema works too;
`--source NAME=PATH` replaces the hub id by a local json/jsonl/parquet file in the same schema.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["SourceSpec", "SOURCES", "ALIASES", "resolve_name", "PROBLEM_FIELDS", "ANSWER_FIELDS", "SOLUTION_FIELDS"]


@dataclass(frozen=True)
class SourceSpec:
    name: str
    kind: str  # "train" | "eval"
    hub_id: str
    config: str | None
    split: str
    note: str = ""

    @property
    def out_split(self) -> str:
        """The `extra_info.split` written for this set."""
        return "train" if self.kind == "train" else "test"


SOURCES: dict[str, SourceSpec] = {
    s.name: s
    for s in (
        SourceSpec("openr1_math_46k", "train", "Elliott/Openr1-Math-46k-8192", None, "train", "SIREN reference run"),
        SourceSpec("dapo_math_17k", "train", "BytedTsinghua-SIA/DAPO-Math-17k", None, "train", "PAR / Clip-Cov runs"),
        SourceSpec("math", "train", "DigitalLearningGmbH/MATH-lighteval", None, "train", "MATH (lighteval)"),
        SourceSpec("aime24", "eval", "HuggingFaceH4/aime_2024", None, "train"),
        SourceSpec("aime25", "eval", "yentinglin/aime_2025", None, "train"),
        SourceSpec("amc23", "eval", "zwhe99/amc23", None, "test"),
        SourceSpec("math500", "eval", "HuggingFaceH4/MATH-500", None, "test"),
        SourceSpec("olympiadbench", "eval", "Hothan/OlympiadBench", "OE_TO_maths_en_COMP", "train"),
        SourceSpec("minerva", "eval", "math-ai/minervamath", None, "test"),
    )
}

ALIASES = {
    "openr1": "openr1_math_46k",
    "openr1-math-46k-8192": "openr1_math_46k",
    "dapo": "dapo_math_17k",
    "dapo-math-17k": "dapo_math_17k",
    "lighteval_math": "math",
    "aime2024": "aime24",
    "aime2025": "aime25",
    "amc2023": "amc23",
    "math-500": "math500",
    "olympiad": "olympiadbench",
    "minervamath": "minerva",
    "minerva_math": "minerva",
}

# Column spellings, in priority order. A problem comes from a text column, else from the last user
# turn of a chat-list `prompt`; an answer from an answer column, else `reward_model.ground_truth`,
# else the last \boxed{} of a solution column.
PROBLEM_FIELDS = ("problem", "question", "Problem", "Question")
ANSWER_FIELDS = ("answer", "Answer", "final_answer", "ground_truth", "reward_model")
SOLUTION_FIELDS = ("solution", "Solution")


def resolve_name(name: str) -> str:
    key = name.strip().lower()
    return ALIASES.get(key, key)
