"""Writes tests/golden/metrics-open.json: token F1 (the SQuAD v1.1 script's
f1_score), ROUGE-L (rouge-score's rougeL F-measure, no stemmer) and BLEU-4
(NLTK's sentence_bleu over characters with SmoothingFunction().method3, as
LLaMA-Factory reports it) for a list of predictions and their golds, each
metric the best over the golds (BLEU-4 takes them all as references).

    pip install nltk rouge-score
    python3 scripts/golden-metrics.py
"""
import collections
import json
import re
import string

from nltk.translate.bleu_score import SmoothingFunction, sentence_bleu
from rouge_score import rouge_scorer


def normalize_answer(s):
    def remove_articles(text):
        return re.sub(r"\b(a|an|the)\b", " ", text)

    def white_space_fix(text):
        return " ".join(text.split())

    def remove_punc(text):
        exclude = set(string.punctuation)
        return "".join(ch for ch in text if ch not in exclude)

    return white_space_fix(remove_articles(remove_punc(s.lower())))


def f1_score(prediction, ground_truth):
    p = normalize_answer(prediction).split()
    g = normalize_answer(ground_truth).split()
    common = collections.Counter(p) & collections.Counter(g)
    num_same = sum(common.values())
    if num_same == 0:
        return 0.0
    precision = num_same / len(p)
    recall = num_same / len(g)
    return 2 * precision * recall / (precision + recall)


CASES = [
    ("Zota Ritoth was born in Viduport.", ["Zota Ritoth was born in Viduport."]),
    ("Zota Ritoth was born in Velmo.", ["Zota Ritoth was born in Viduport."]),
    ("She works for the Dito Guild, I think.", ["Zota Ritoth works for Dito Guild."]),
    ("born Viduport", ["Zota Ritoth was born in Viduport.", "Viduport"]),
    ("The cat sat on the mat", ["The cat is on the mat", "There is a cat on the mat"]),
    ("abc", ["abcd"]),
    ("ab", ["xyz"]),
    ("", ["something"]),
    ("Paris is the capital of France.", ["The capital of France is Paris."]),
    ("1860", ["Zota Ritoth began work in 1860."]),
    ("Zota Ritoth plays the sabedrum and the sabedrum.", ["Zota Ritoth plays the sabedrum."]),
    ("Nørbø café — naïve", ["norbo cafe naive", "Nørbø café"]),
]

scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)
out = []
for pred, golds in CASES:
    rouge = max(scorer.score(g, pred)["rougeL"].fmeasure for g in golds)
    bleu = sentence_bleu(
        [list(g) for g in golds], list(pred), smoothing_function=SmoothingFunction().method3
    )
    out.append(
        {
            "pred": pred,
            "gold": golds,
            "token_f1": max(f1_score(pred, g) for g in golds),
            "rouge_l": rouge,
            "bleu_4": bleu,
        }
    )
with open("tests/golden/metrics-open.json", "w") as f:
    json.dump(out, f, indent=1, ensure_ascii=False)
    f.write("\n")
