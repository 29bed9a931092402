"""A hand-built model whose fact circuit is known exactly (ground truth for localization).

:func:`planted_fact_model` returns a 4-layer attention+MLP ``HookedTransformer`` (no
normalization, ReLU MLPs, ``d_head=16``, 2 heads per layer) that answers
``"<Subject> plays the sport of"`` (and ``"<Subject> is a professional"``) with the sport
assigned to the subject. Every weight is Gaussian noise (std ``noise``, seeded) *plus* the
planted circuit below, so all components are non-zero but only two matter.

Residual-stream layout (``S = n_subjects``, ``d_model = max(96, S + 48)``):

=====================  =========================================================
dims                   meaning
=====================  =========================================================
``0 .. S-1``           one-hot subject identity (``SUBJ_i``), in subject embeddings
``S``                  ``IS_SUBJ``: 1 in every subject embedding
``S+1``                ``QUERY``: 1 in the embeddings of ``"of"`` and ``"professional"``
``S+2 .. S+5``         ``ATTR_a``: attribute written by the lookup MLP at the subject
``S+6 .. S+9``         ``MOVED_a``: attribute written by the extraction head at the end
``S+10 ..``            unused (noise only)
=====================  =========================================================

Attributes ``a`` are ``("basketball", "baseball", "football", "golf")``; golf is never a
true answer (it is there as an edit target that the circuit can carry).

Planted weights (added to the noise):

* **Embedding**: ``W_E[subject_i, SUBJ_i] = 1``, ``W_E[subject_i, IS_SUBJ] = 1``,
  ``W_E["of", QUERY] = W_E["professional", QUERY] = 1``. ``W_pos`` is noise only.
* **Lookup MLP, layer 1** (:attr:`PlantedFactModel.lookup_mlp`): neuron ``i`` belongs to
  subject ``i``: ``W_in[SUBJ_i, i] = 1``, ``b_in[i] = -0.5`` (margin, so only subject
  ``i``'s own token fires it, with ``relu`` output 0.5), ``W_out[i, ATTR_a(i)] = 2``, so
  the residual after layer 1 holds ``ATTR_a(i) = 1`` at the subject position.
* **Extraction head, layer 2 head 1** (:attr:`PlantedFactModel.extraction_head`):
  ``W_Q[QUERY, 0] = W_K[IS_SUBJ, 0] = 10``: the score of a subject key for a query token is
  ``10 * 10 / sqrt(16) = 25``, so the final position attends ~100% to the subject. OV is
  ``W_V[ATTR_a, a] = 1``, ``W_O[a, MOVED_a] = 1``: the attribute is copied to ``MOVED_a``.
* **Unembedding**: ``W_U[MOVED_a, token(a)] = 10`` (logit scale 10).

Everything else (layers 0 and 3, head 2.0, the other heads, biases) is noise. Hence:
ablating ``blocks.1.hook_mlp_out`` or head 2.1's ``hook_z`` removes the answer (candidate
accuracy falls to chance); ablating anything else does not; the sport is linearly decodable
from ``blocks.1.hook_resid_post`` at the subject position but not from
``blocks.0.hook_resid_post`` (there only the subject identity is present).

Example:
    >>> pf = planted_fact_model(n_subjects=12)
    >>> pf.lookup_layer, pf.extraction_head
    (1, Component(kind='head', layer=2, index=1))
"""

from __future__ import annotations

import functools
import random
from dataclasses import dataclass, field
from typing import Any

import torch

from factlens.data.records import FactDataset, FactRecord
from factlens.testing.tiny import COMMON_WORDS, build_hooked
from factlens.testing.tokenizer import split_words, word_tokenizer

__all__ = ["planted_fact_model", "PlantedFactModel", "SUBJECT_NAMES", "ATTRIBUTES", "SPORTS"]

#: True answers (assigned round-robin, then shuffled).
SPORTS: tuple[str, ...] = ("basketball", "baseball", "football")
#: Attribute dims of the residual stream (golf: edit target only).
ATTRIBUTES: tuple[str, ...] = (*SPORTS, "golf")
TEMPLATE = "{} plays the sport of"
PARAPHRASE = "{} is a professional"
QUERY_WORDS: tuple[str, ...] = ("of", "professional")

#: Single-token, name-like subjects (extended with an ``"x"`` suffix beyond 48).
SUBJECT_NAMES: tuple[str, ...] = (
    "Alvarez", "Brennan", "Castillo", "Dawson", "Ellison", "Fletcher", "Garrison", "Hawkins",
    "Ingram", "Jennings", "Kessler", "Lambert", "Marston", "Nakamura", "Okafor", "Prescott",
    "Quinlan", "Ramirez", "Sandoval", "Thornton", "Underwood", "Vasquez", "Whitaker", "Yamamoto",
    "Zimmerman", "Abernathy", "Beckett", "Calloway", "Delgado", "Everett", "Fairbanks", "Gallagher",
    "Holloway", "Iverson", "Jefferson", "Kowalski", "Lindqvist", "Montoya", "Nordstrom", "Oyelaran",
    "Pemberton", "Quintero", "Rasmussen", "Sorensen", "Townsend", "Ulrich", "Valentine", "Wexler",
)

LOOKUP_LAYER = 1
EXTRACTION_LAYER, EXTRACTION_HEAD = 2, 1
MARGIN = 0.5  # negative bias of the lookup neurons
QK_SCALE = 10.0
LOGIT_SCALE = 10.0


def _subject_names(n: int) -> list[str]:
    base = len(SUBJECT_NAMES)
    return [SUBJECT_NAMES[i % base] + "x" * (i // base) for i in range(n)]


@dataclass(frozen=True)
class PlantedFactModel:
    """A planted-circuit model with its facts and the ground-truth sites.

    Attributes:
        model: The ``HookedTransformer``.
        dataset: The facts (name ``"planted"``, template ``"{} plays the sport of"``,
            paraphrase ``"<subject> is a professional"``, candidates = the three sports).
        lookup_layer: Layer whose MLP maps subject -> attribute (1).
        extraction_head: The head that moves the attribute to the last position (2.1).
        lookup_mlp: ``Component("mlp", lookup_layer)``.
        n_layers: Number of layers (4).
        seed: The construction seed (also the task's seed).
        layout: Residual dims: ``"subject"`` (list, per subject), ``"is_subject"``,
            ``"query"``, ``"attr"`` and ``"moved"`` (dicts attribute -> dim).
    """

    model: Any
    dataset: FactDataset
    lookup_layer: int
    extraction_head: Any
    lookup_mlp: Any
    n_layers: int
    seed: int = 0
    layout: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)

    @functools.cached_property
    def task(self):
        """``factlens.tasks.sports_athlete_editing(dataset, n_forget=8, seed=seed)`` (built lazily)."""
        from factlens.tasks import sports_athlete_editing

        return sports_athlete_editing(self.dataset, n_forget=8, seed=self.seed)

    @property
    def subjects(self) -> tuple[str, ...]:
        """The subjects, in dataset order."""
        return tuple(r.subject for r in self.dataset)


def _vocabulary(subjects: list[str]):
    """The word tokenizer: one token per subject, template word, common word and sport."""
    template_words = [w for t in (TEMPLATE, PARAPHRASE) for w in split_words(t.replace("{}", " "))]
    other = set()
    for w in (*COMMON_WORDS, *template_words, *ATTRIBUTES):
        other.update(split_words(w))
    clash = other.intersection(subjects)
    if clash:  # pragma: no cover - guarded by the fixed name list
        raise ValueError(f"subject names clash with template words: {sorted(clash)}")
    return word_tokenizer([*subjects, *sorted(other)])


def _plant(model, tok, subjects: list[str], sports: list[str], layout: dict[str, Any], *, seed: int,
           noise: float) -> None:
    """Seeded noise on every weight, then the planted circuit (module docstring) on top, in place."""
    IS_SUBJ, QUERY, attr, moved = layout["is_subject"], layout["query"], layout["attr"], layout["moved"]

    def tid(word: str) -> int:
        return tok.convert_tokens_to_ids(word)

    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _, p in sorted(model.named_parameters(), key=lambda kv: kv[0]):
            p.copy_(torch.randn(p.shape, generator=gen, dtype=p.dtype) * noise)
        W_E = model.embed.W_E
        for i, s in enumerate(subjects):
            W_E[tid(s), i] += 1.0
            W_E[tid(s), IS_SUBJ] += 1.0
        for w in QUERY_WORDS:
            W_E[tid(w), QUERY] += 1.0

        mlp = model.blocks[LOOKUP_LAYER].mlp
        for i, sport in enumerate(sports):
            mlp.W_in[i, i] += 1.0
            mlp.b_in[i] = -MARGIN
            mlp.W_out[i, attr[sport]] += 1.0 / (1.0 - MARGIN)

        att = model.blocks[EXTRACTION_LAYER].attn
        h = EXTRACTION_HEAD
        att.W_Q[h, QUERY, 0] += QK_SCALE
        att.W_K[h, IS_SUBJ, 0] += QK_SCALE
        for k, a in enumerate(ATTRIBUTES):
            att.W_V[h, attr[a], k] += 1.0
            att.W_O[h, k, moved[a]] += 1.0
            model.unembed.W_U[moved[a], tid(a)] += LOGIT_SCALE


def planted_fact_model(*, n_subjects: int = 48, seed: int = 0, noise: float = 0.01) -> PlantedFactModel:
    """Build the planted fact model described in the module docstring.

    Args:
        n_subjects: Number of subjects / facts (>= 3).
        seed: Seed of the noise and of the subject -> sport assignment.
        noise: Std of the Gaussian noise added to every weight.

    Returns:
        The model (float32, CPU, eval mode) with its dataset and planted sites.
    """
    from transformer_lens import HookedTransformerConfig

    from factlens.components import Component

    if n_subjects < 3:
        raise ValueError(f"n_subjects must be >= 3, got {n_subjects}")
    subjects = _subject_names(n_subjects)
    sports = [SPORTS[i % len(SPORTS)] for i in range(n_subjects)]
    random.Random(seed).shuffle(sports)

    tok = _vocabulary(subjects)
    S = n_subjects
    d_model = max(96, S + 48)
    layout = {"subject": list(range(S)), "is_subject": S, "query": S + 1,
              "attr": {a: S + 2 + k for k, a in enumerate(ATTRIBUTES)},
              "moved": {a: S + 6 + k for k, a in enumerate(ATTRIBUTES)}}
    cfg = HookedTransformerConfig(
        n_layers=4, d_model=d_model, n_heads=2, d_head=16, d_mlp=max(64, S), n_ctx=64,
        d_vocab=len(tok), act_fn="relu", normalization_type=None,
        positional_embedding_type="standard", default_prepend_bos=True, init_weights=False,
        device="cpu", dtype=torch.float32, model_name="factlens-planted",
    )
    model = build_hooked(cfg, tok)
    _plant(model, tok, subjects, sports, layout, seed=seed, noise=noise)
    model.eval()

    records = tuple(
        FactRecord(
            subject=s, template=TEMPLATE, answer=sport, relation="sport", id=str(i),
            paraphrases=(PARAPHRASE.format(s),),
        )
        for i, (s, sport) in enumerate(zip(subjects, sports))
    )
    dataset = FactDataset(records, name="planted", candidates=SPORTS)
    return PlantedFactModel(
        model=model, dataset=dataset, lookup_layer=LOOKUP_LAYER,
        extraction_head=Component("head", EXTRACTION_LAYER, EXTRACTION_HEAD),
        lookup_mlp=Component("mlp", LOOKUP_LAYER), n_layers=cfg.n_layers, seed=seed, layout=layout,
    )
