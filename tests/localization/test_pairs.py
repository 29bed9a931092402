import re
import warnings

import pytest
import torch
from tokenizers import Regex, Tokenizer, models, pre_tokenizers, processors
from transformers import PreTrainedTokenizerFast

from factlens.data import FactDataset, FactRecord, counterfact
from factlens.localization.pairs import make_pairs
from factlens.testing import tiny_model
from factlens.testing.tokenizer import SPECIAL_TOKENS

pytestmark = pytest.mark.usefixtures("one_thread")


def _rec(subject, answer):
    return FactRecord(subject=subject, template="Fact: {} plays the sport of", answer=answer)


def test_unpaired_facts_dropped_with_warning_or_error():
    m = tiny_model()
    ds = FactDataset((_rec("LeBron James", "basketball"), _rec("Tom Brady", "football"), _rec("Jordan", "basketball")))
    with pytest.warns(UserWarning, match="Jordan"):
        p = make_pairs(m, ds)
    assert [r.subject for r in p.records] == ["LeBron James", "Tom Brady"]
    assert p.clean.tokens.shape[0] == 2 and p.corrupted.tokens.shape == p.clean.tokens.shape
    assert p.dropped == [ds[2].id]
    with pytest.raises(ValueError, match="same token length"):
        make_pairs(m, ds, drop_unpaired=False)


# --- a tokenizer that merges across the subject boundary ----------------------------------------


def merging_tokenizer(texts, merged):
    """Word-level tokenizer in which each string of ``merged`` (e.g. ``"Bob's"``) is one token.

    ``"Bob's team is"`` is 3 tokens but ``"Ann's team is"`` is 4 (``Ann``, ``'s``, ...): swapping
    the subject changes the token length, as BPE tokenizers do when they merge across the
    subject boundary.
    """
    alts = "|".join(re.escape(m) for m in sorted(merged, key=len, reverse=True))
    pre = pre_tokenizers.Sequence([pre_tokenizers.Split(Regex(r"\s+"), "removed"),
                                   pre_tokenizers.Split(Regex(rf"{alts}|'s|\w+|[^\w\s]"), "isolated")])
    pieces = set()
    for t in list(texts) + list(merged):
        pieces.update(p for p, _ in pre.pre_tokenize_str(t))
    vocab = {t: i for i, t in enumerate(SPECIAL_TOKENS)}
    for t in sorted(pieces - set(SPECIAL_TOKENS)):
        vocab[t] = len(vocab)
    tk = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tk.pre_tokenizer = pre
    tk.post_processor = processors.TemplateProcessing(single="<bos> $A", special_tokens=[("<bos>", vocab["<bos>"])])
    return PreTrainedTokenizerFast(tokenizer_object=tk, bos_token="<bos>", pad_token="<pad>", unk_token="<unk>",
                                   eos_token="<bos>", name_or_path="merging-test", add_bos_token=True)


TEAM = "{}'s team is"
TEAM_FACTS = (("Ann", "red"), ("Bob", "blue"), ("Cat", "blue"), ("Dan", "red"))


@pytest.fixture(scope="module")
def merging():
    tok = merging_tokenizer([TEAM.format(s) + " " + a for s, a in TEAM_FACTS], ["Bob's"])
    model = tiny_model(tokenizer=tok)
    ds = FactDataset(tuple(FactRecord(subject=s, template=TEAM, answer=a, relation="team") for s, a in TEAM_FACTS),
                     name="teams")
    return model, ds


def test_merging_tokenizer_changes_length_on_subject_swap(merging):
    model, ds = merging
    n = [len(model.tokenizer(r.prompt)["input_ids"]) for r in ds]
    assert n == [5, 4, 5, 5]  # "Bob's" is one token


@pytest.mark.parametrize("seed", range(6))
def test_swap_that_changes_token_length_picks_another_partner_or_drops(merging, seed):
    """Issue 11 item 0: never stop on a swap that changes the token length."""
    model, ds = merging
    with pytest.warns(UserWarning, match="Bob"):
        p = make_pairs(model, ds, seed=seed)
    # Bob's prompt is one token shorter than any swap into it: Bob is left out and counted
    assert [r.subject for r in p.records] == ["Ann", "Cat", "Dan"]
    assert p.dropped == [ds[1].id]
    # Ann and Dan (red) can only be corrupted by a blue subject; Bob's swap misaligns, so Cat
    assert p.corrupted.prompts[0] == "Cat's team is" and p.corrupted.prompts[2] == "Cat's team is"
    assert p.corrupted.prompts[1] in ("Ann's team is", "Dan's team is")
    assert p.corrupted.lengths.tolist() == p.clean.lengths.tolist()
    assert p.corrupted.subject_first.tolist() == p.clean.subject_first.tolist()
    assert (p.clean_answer != p.corrupted_answer).all()


def test_partners_pair_a_fact_without_partner_in_the_dataset(merging):
    model, ds = merging
    only_red = FactDataset((ds[0], ds[3]), name="red")  # no blue subject to corrupt with
    with pytest.raises(ValueError, match="no fact has a corrupting subject"):
        make_pairs(model, only_red)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        p = make_pairs(model, only_red, partners=ds)
    assert p.corrupted.prompts == ["Cat's team is", "Cat's team is"] and p.dropped == []


def test_patching_methods_record_dropped_facts(merging):
    from factlens.localization.activation import activation_patching
    from factlens.localization.attribution import attribution_patching
    from factlens.localization.path_patching import path_patching
    from factlens.scores import ComponentScores

    model, ds = merging
    bob = ds[1].id
    with pytest.warns(UserWarning, match="left out 1"):
        direct = path_patching(model, ds)
        via = path_patching(model, ds, receivers=["L1H0"])
        attr = attribution_patching(model, ds)
        act = activation_patching(model, ds, normalize=False)
    for s in (direct, via, attr, act):
        assert s.n_dropped == 1 and s.dropped_ids == (bob,)
        assert ComponentScores.from_dict(s.to_dict()).dropped_ids == (bob,)  # survives the run's JSON
        assert bob not in s.example_ids and len(s.example_ids) == 3 == s.n_examples
    assert len(attr.clean_metric) == 3


def test_attribution_patching_with_an_unpairable_fact():
    """Issue 11 item 6: attribution patching batched over the records (IndexError) instead of the pairs."""
    from factlens.localization.attribution import attribution_patching

    m = tiny_model()
    ds = FactDataset((_rec("LeBron James", "basketball"), _rec("Tom Brady", "football"), _rec("Jordan", "basketball")))
    with pytest.warns(UserWarning, match="Jordan"):
        s = attribution_patching(m, ds, batch_size=2)
    assert s.n_examples == 2 and s.n_dropped == 1
    assert s.per_example.shape == (len(s), 2)


def test_flu_path_patching_records_dropped_facts():
    from factlens.localization.flu import flu_scores
    from factlens.testing import planted_fact_model
    from factlens.testing.planted import TEMPLATE

    p = planted_fact_model(n_subjects=12)
    subjects = [r.subject for r in p.dataset]
    odd = FactRecord(subject=f"{subjects[0]} {subjects[1]}", template=TEMPLATE, answer="golf", id="two-token")
    ds = FactDataset(p.dataset.records + (odd,), name="planted-plus")
    with pytest.warns(UserWarning, match="left out 1"):
        s = flu_scores(p.model, ds, approach="path_patching", n_std=1.0, extraction_k=1)
    assert s.n_dropped == 1 and s.dropped_ids == ("two-token",)
    assert "two-token" not in s.extra["per_fact"]


# --- relations (issue 11 item 1) ----------------------------------------------------------------


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_pairs_stay_within_relation(seed):
    m = tiny_model()
    ds = counterfact()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        p = make_pairs(m, ds, seed=seed)
    by_relation = {}
    for r in ds:
        by_relation.setdefault(r.relation, []).append(r.subject)
    for r, corrupted in zip(p.records, p.corrupted.prompts):
        allowed = {r.with_subject(s).prompt for s in by_relation[r.relation] if s != r.subject}
        assert corrupted in allowed, (r.prompt, corrupted)


def test_relation_without_partner_is_dropped_not_crossed():
    m = tiny_model()
    cf = counterfact()
    capitals = [r for r in cf if r.relation == "P36"][:3]
    other = next(r for r in cf if r.relation != "P36")
    ds = FactDataset(tuple(capitals) + (other,), name="mixed")
    with pytest.warns(UserWarning, match=re.escape(repr(other.subject))):
        p = make_pairs(m, ds)
    assert other.id in p.dropped and other.id not in [r.id for r in p.records]


# --- first tokens of answers --------------------------------------------------------------------


def _york_model():
    return tiny_model(vocab_texts=["The home of A is New York", "The home of B is New Delhi", "The home of C is Paris"])


def test_candidates_sharing_their_first_token_raise():
    m = _york_model()
    recs = tuple(FactRecord(subject=s, template="The home of {} is", answer=a)
                 for s, a in (("A", "New York"), ("B", "New Delhi"), ("C", "Paris")))
    with pytest.raises(ValueError, match="share their first token"):
        make_pairs(m, FactDataset(recs, candidates=("New York", "New Delhi", "Paris")))


def test_given_corrupted_answer_sharing_first_token_raises():
    m = _york_model()
    r = FactRecord(subject="A", template="The home of {} is", answer="New York", target_new="New Delhi")
    with pytest.raises(ValueError, match="first token"):
        make_pairs(m, [r], corrupted_prompts=["The home of B is"])


def test_corrupted_answers_without_corrupted_prompts_are_refused_not_ignored(planted):
    """They only apply to user-given corrupted prompts; alone they changed nothing, without a word."""
    import factlens

    with pytest.raises(ValueError, match="pass them with corrupted_prompts="):
        factlens.localize(planted.model, planted.dataset, method="activation_patching", include_resid=False,
                          show_progress=False, corrupted_answers=["golf"] * len(planted.dataset))


# --- the runner: partners from every known fact, dropped facts in the job's JSON -----------------


def test_runner_pairs_forget_facts_with_known_partners_and_records_drops():
    from factlens.runner.config import RunConfig
    from factlens.runner.pipeline import Prepared, _dropped_facts, _mask_and_scores
    from factlens.tasks import Task
    from factlens.testing import planted_fact_model
    from factlens.testing.planted import TEMPLATE

    p = planted_fact_model(n_subjects=12)
    subjects = [r.subject for r in p.dataset]
    odd = FactRecord(subject=f"{subjects[0]} {subjects[1]}", template=TEMPLATE, answer="football", id="two-token")
    known = FactDataset(p.dataset.records + (odd,), name="planted", candidates=p.dataset.candidates)
    same_answer = [r for r in p.dataset if r.answer == p.dataset[0].answer][:2]
    forget = FactDataset(tuple(same_answer) + (odd,), name="planted", candidates=known.candidates)
    rest = FactDataset(tuple(r for r in p.dataset if r not in same_answer), name="planted", candidates=known.candidates)
    task = Task("t", "inject", forget, rest, rest)
    prep = Prepared(p.model, p.model, known, task, {})
    cfg = RunConfig(model="planted", task="planted", localize_on="forget")
    with pytest.warns(UserWarning, match="left out 1 of 3"):
        _, scores, _, _ = _mask_and_scores(prep, cfg, 0, "attribution_patching", {"param_budget": 10**9})
    # the two same-answer forget facts have no partner among the forget facts: the known facts pair them
    assert scores.n_examples == 2
    assert _dropped_facts(scores) == {"n_dropped": 1, "dropped_ids": ["two-token"]}
    from factlens.runner.report_figures import _dropped_note

    note = _dropped_note({"dropped_facts": _dropped_facts(scores)})
    assert "1 fact(s) left out" in note and "two-token" in note and "first token" in note


# --- user-given corrupted answers -----------------------------------------------------------------


def _given_prompts(p):
    """The planted facts' corrupted prompts: each subject swapped for the one six facts on."""
    recs = list(p.dataset)
    return recs, [r.with_subject(recs[(i + 6) % len(recs)].subject).prompt for i, r in enumerate(recs)]


@pytest.mark.parametrize("answers, match", [
    (lambda n: ["golf"] * (n + 1), r"12 facts but 13 corrupted_answers; give one answer per fact"),
    (lambda n: ["golf"] * (n // 2), r"12 facts but 6 corrupted_answers; give one answer per fact"),
    (lambda n: "golf", r"corrupted_answers must be a list of answers \(one per fact\), not the string 'golf'"),
    (lambda n: ["golf"] * (n - 1) + [None], r"corrupted_answers\[11\] is None, not a non-empty answer string"),
])
def test_corrupted_answers_must_be_one_answer_string_per_fact(planted12, answers, match):
    """7 answers for 6 facts were accepted (the extra one ignored), 3 failed with a bare IndexError, and a
    string was read as one answer per character (``"footballs"``: 9 answers) and scored."""
    recs, prompts = _given_prompts(planted12)
    with pytest.raises(ValueError, match=match):
        make_pairs(planted12.model, recs, corrupted_prompts=prompts, corrupted_answers=answers(len(recs)))


def test_given_prompts_without_answers_name_the_options(planted12):
    recs, prompts = _given_prompts(planted12)
    with pytest.raises(ValueError, match=r"12 of 12 facts have no target_new \(first: '0'\).*give corrupted_answers="):
        make_pairs(planted12.model, recs, corrupted_prompts=prompts)
    cands = planted12.dataset.candidates
    answers = [cands[(cands.index(r.answer) + 1) % len(cands)] for r in recs]
    pairs = make_pairs(planted12.model, recs, corrupted_prompts=prompts, corrupted_answers=answers)
    assert pairs.corrupted.prompts == prompts and len(pairs) == len(recs)
    assert pairs.corrupted_answer.tolist() == [planted12.model.to_single_token(" " + a) for a in answers]


def test_subjects_that_encode_alike_never_corrupt_each_other_and_unknown_subjects_are_named():
    """Audit (session 50): with a tokenizer that lacks the dataset's words (the tiny model's on the
    planted facts), 11 of 12 subjects encode to <unk>: a fact "corrupted" with another <unk> subject
    was a pair whose corrupted prompt equals the clean one (a patching effect of zero by construction),
    and nothing was said."""
    from factlens.testing import planted_fact_model, tiny_model

    data = planted_fact_model(n_subjects=12).dataset
    with pytest.warns(UserWarning, match=r"11 of 12 subject\(s\) encode only to the unknown token"):
        pairs = make_pairs(tiny_model(), data)
    for k in range(len(pairs)):
        n = int(pairs.clean.lengths[k])
        assert not torch.equal(pairs.clean.tokens[k, :n], pairs.corrupted.tokens[k, :n])
