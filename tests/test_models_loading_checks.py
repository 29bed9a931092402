"""load_model's checks before loading: architecture, names, options, dtype and device
(factlens.models), and empty prompts without BOS (factlens.tokens.tokenize_prompts)."""

from __future__ import annotations

import pytest
import torch

import factlens.model_checks as MC
import factlens.models as M

pytestmark = pytest.mark.usefixtures("one_thread")


def _tiny_hf(kind: str, n_layers: int = 2):
    """A small random Hugging Face model: GPT-2 or Gemma 3 (as in tests/test_models.py)."""
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig, GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    if kind == "gpt2":
        return GPT2LMHeadModel(GPT2Config(n_layer=n_layers, n_embd=32, n_head=4, n_positions=64, vocab_size=100)).eval()
    return Gemma3ForCausalLM(Gemma3TextConfig(
        num_hidden_layers=n_layers, hidden_size=32, intermediate_size=64, num_attention_heads=4, num_key_value_heads=2,
        head_dim=8, vocab_size=100, max_position_embeddings=64, sliding_window=16,
        layer_types=(["sliding_attention", "full_attention"] * n_layers)[:n_layers])).eval()


@pytest.fixture
def gpt2_dir(tmp_path):
    """A tiny GPT-2 checkpoint folder (weights, config.json, tokenizer)."""
    from factlens.testing.tokenizer import word_tokenizer

    folder = tmp_path / "gpt2"
    _tiny_hf("gpt2").save_pretrained(folder)
    word_tokenizer(["Michael Jordan plays basketball"]).save_pretrained(folder)
    return folder


@pytest.fixture
def no_loading(monkeypatch):
    """Fail the test if a checkpoint or the embedded model starts loading."""
    def boom(*a, **k):
        raise AssertionError("loading started before the arguments were checked")

    for f in ("_from_hf_dir", "_from_gguf", "_load_embedded", "_from_hub"):
        monkeypatch.setattr(M, f, boom)


# 1. the checkpoint's own config against TransformerLens's config for tl_name

@pytest.mark.parametrize("n_layers", [3, 1])
def test_a_checkpoint_of_other_sizes_than_tl_name_is_refused(tiny_tl_configs, n_layers):
    """A 19-layer checkpoint loaded as google/gemma-3-270m became an 18-layer model without a word
    (fewer layers: a bare IndexError)."""
    with pytest.raises(ValueError, match=rf"num_hidden_layers={n_layers} in the checkpoint, n_layers=2 in "
                                         "TransformerLens.*Give the tl_name"):
        M._hf_to_tl([_tiny_hf("gemma", n_layers)], None, "google/gemma-3-270m", device="cpu", dtype=torch.float32)


def test_a_checkpoint_of_tl_names_sizes_loads(tiny_tl_configs, gpt2_dir):
    model = M.load_model(path=gpt2_dir, tl_name="gpt2")
    assert model.cfg.n_layers == 2 and model.cfg.d_model == 32


def test_the_sizes_read_from_hugging_face_configs():
    from transformers import GPT2Config

    sizes = MC.hf_sizes(_tiny_hf("gemma").config)
    assert {k: v[1] for k, v in sizes.items()} == dict(
        n_layers=2, d_model=32, n_heads=4, n_key_value_heads=2, d_head=8, d_vocab=100, d_mlp=64,
        rotary_base=1_000_000, rotary_base_local=10_000, window_size=16)
    gpt2 = {k: v[1] for k, v in MC.hf_sizes(GPT2Config(n_layer=3, n_embd=64, n_head=4)).items()}
    assert gpt2 == dict(n_layers=3, d_model=64, n_heads=4, d_head=16, d_vocab=50257, d_mlp=256)


# 2. path= without tl_name

def test_path_without_tl_name_is_refused_not_loaded_as_gemma(gpt2_dir, no_loading):
    with pytest.raises(ValueError, match="needs tl_name="):
        M.load_model(path=gpt2_dir)


def test_path_with_an_explicit_name_uses_it(gpt2_dir, monkeypatch):
    seen = []
    monkeypatch.setattr(M, "_from_hf_dir", lambda path, arch, **kw: seen.append(arch))
    M.load_model("gpt2", path=gpt2_dir)
    assert seen == ["gpt2"]


# 3. TransformerLens reading an architecture's config from an unreachable Hub

def test_path_when_transformer_lens_cannot_reach_the_hub(gpt2_dir, monkeypatch):
    import transformer_lens.loading_from_pretrained as tl_loading

    from pathlib import Path

    real = tl_loading.AutoConfig.from_pretrained

    def offline(name, *a, **k):  # local folders read, Hub names unreachable
        if Path(name).exists():
            return real(name, *a, **k)
        raise OSError("We couldn't connect to 'https://huggingface.co' to load the files")

    monkeypatch.setattr(tl_loading.AutoConfig, "from_pretrained", offline)
    with pytest.raises(ValueError, match=r"reads it from the Hugging Face Hub .*only Llama and Gemma names"):
        M.load_model(path=gpt2_dir, tl_name="gpt2")


def test_the_hub_failure_message_no_longer_promises_offline_path_loading(monkeypatch):
    def offline(name, *a, **kw):
        raise OSError("offline")

    monkeypatch.setattr(M, "_hub_architecture", offline)  # the config is read first (and fails first) offline
    monkeypatch.setattr(M, "_from_pretrained", offline)
    with pytest.raises(OSError, match="without the Hub for Llama and Gemma architectures only") as e:
        M.load_model("gpt2")
    assert "tl_name='gpt2') loads a local Hugging Face checkpoint" not in str(e.value)


# 4. tl_name checked before loading, with a short "did you mean"

@pytest.mark.parametrize("route", ["path", "gguf"])
def test_an_unknown_tl_name_is_refused_before_loading(route, gpt2_dir, no_loading):
    where = {"path": gpt2_dir, "gguf": gpt2_dir / "model.safetensors"}[route]
    with pytest.raises(ValueError, match=r"unknown TransformerLens architecture tl_name='google/gemma-3-270'\. "
                                         r"Did you mean \['google/gemma-3-270m'") as e:
        M.load_model(**{route: where}, tl_name="google/gemma-3-270")
    assert len(str(e.value)) < 600


def test_did_you_mean_lists_each_name_once():
    with pytest.raises(ValueError, match="Did you mean") as e:
        M.check_model_name("google/gemma-3-270")
    assert str(e.value).count("'google/gemma-3-270m'") == 1


# 5. conversion options

@pytest.mark.parametrize("option,close", [("fold_LN", "fold_ln"), ("center_unembeded", "center_unembed")])
@pytest.mark.parametrize("route", ["path", "embedded", "hub"])
def test_a_misspelt_option_is_refused(option, close, route, gpt2_dir, no_loading):
    where = {"path": dict(path=gpt2_dir, tl_name="gpt2"), "embedded": dict(), "hub": dict(name="gpt2")}[route]
    with pytest.raises(ValueError, match=rf"unknown load_model option\(s\) \['{option}'\] \('{option}': did you "
                                         rf"mean '{close}'\?\)\. Options accepted here .*'fold_value_biases'"):
        M.load_model(**where, **{option: False})


def test_known_options_pass():
    MC.check_options({"fold_ln": False, "center_unembed": False, "n_ctx": 32}, hub=False)
    MC.check_options({"revision": "main", "trust_remote_code": True}, hub=True)
    with pytest.raises(ValueError, match="revision"):
        MC.check_options({"revision": "main"}, hub=False)  # a local checkpoint is not downloaded


# 6. dtype and device

@pytest.mark.parametrize("given,want", [("bfloat16", torch.bfloat16), ("bf16", torch.bfloat16),
                                        ("torch.float16", torch.float16), ("float32", torch.float32),
                                        (torch.float64, torch.float64), (None, torch.float32)])
def test_dtype_names_are_taken(given, want):
    assert MC.check_dtype(given) is want


@pytest.mark.parametrize("dtype", ["float8", torch.float8_e4m3fn, torch.int8, "int8"])
def test_other_dtypes_are_refused_before_loading(dtype, no_loading):
    with pytest.raises(ValueError, match="torch.bfloat16"):
        M.load_model(dtype=dtype)


def test_a_dtype_name_loads_the_embedded_model_in_that_dtype(monkeypatch):
    from factlens.testing import tiny_model

    monkeypatch.setattr(M, "_load_embedded", lambda name, *, device, dtype, **kw: M._place(tiny_model(), device, dtype))
    assert next(M.load_model(dtype="bfloat16").parameters()).dtype == torch.bfloat16


@pytest.mark.parametrize("device,n_cuda,match", [
    ("cuda", 0, "CUDA is not available"), ("cuda:0", 0, "CUDA is not available"),
    ("cuda:3", 2, r"has 2 CUDA device\(s\): cuda:0, cuda:1"), ("mps", 0, "MPS"), ("gpu", 0, "not a torch device")])
def test_an_unavailable_device_is_refused_before_loading(monkeypatch, no_loading, device, n_cuda, match):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: n_cuda > 0)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: n_cuda)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    with pytest.raises(ValueError, match=match):
        M.load_model(device=device)
    assert MC.check_device(None) == torch.device("cpu") and MC.check_device("cpu") == torch.device("cpu")


# 6b. argument types

@pytest.mark.parametrize("kwargs, named", [({"name": 123}, "name=123 is of type int"), ({"name": ["gpt2"]}, "name=['gpt2']"),
                                           ({"path": 5}, "path=5 is of type int, not a path"),
                                           ({"gguf": 3.0}, "gguf=3.0 is of type float, not a path"),
                                           ({"path": ".", "tl_name": 4}, "tl_name=4 is of type int")])
def test_arguments_of_the_wrong_type_are_named_before_loading(kwargs, named, no_loading):
    """``load_model(123)`` failed inside pathlib ("expected str, bytes or os.PathLike object, not int"),
    ``load_model(["gpt2"])`` with "unhashable type: 'list'": neither said which argument was wrong."""
    with pytest.raises(TypeError, match=r"load_model: .*" + named.replace("[", r"\[").replace("]", r"\]")):
        M.load_model(**kwargs)


def test_a_pathlib_path_is_a_path(gpt2_dir, no_loading):
    """Paths as ``pathlib.Path`` pass the type check (the route then checks the folder)."""
    with pytest.raises(ValueError, match="needs tl_name="):
        M.load_model(path=gpt2_dir)


# 7. an empty prompt on a model without BOS

def test_an_empty_prompt_without_bos_is_refused():
    from factlens.testing import tiny_model
    from factlens.tokens import tokenize_prompts

    m = tiny_model()
    assert tokenize_prompts(m, ["", "Michael Jordan plays"]).lengths.tolist()[0] == 1  # BOS: fine
    m.cfg.default_prepend_bos = False
    with pytest.raises(ValueError, match=r"prompt 1 \(''\) has no tokens"):
        tokenize_prompts(m, ["Michael Jordan plays", ""])


# 5. architectures factlens refuses (mixture of experts, bidirectional attention), before any weights load

def _moe_config(tiny_tl_configs, monkeypatch):
    """TransformerLens's config reader answering a GPT-2-shaped mixture-of-experts config."""
    import transformer_lens.loading_from_pretrained as tl_loading

    dense = tl_loading.convert_hf_model_config

    def moe(name, **kwargs):
        return {**dense(name, **kwargs), "num_experts": 4, "experts_per_token": 2, "gated_mlp": True}

    monkeypatch.setattr(tl_loading, "convert_hf_model_config", moe)


def test_a_mixture_of_experts_hub_model_is_refused_before_its_weights_load(tiny_tl_configs, monkeypatch):
    """Session 50: ModelShape refused MoE models only at first use, after load_model had downloaded
    and converted all of their weights (Mixtral-8x7B: ~90 GB)."""
    _moe_config(tiny_tl_configs, monkeypatch)
    started = []
    monkeypatch.setattr(M, "_from_pretrained", lambda *a, **k: started.append(a))
    with pytest.raises(ValueError, match=r"mixture-of-experts models \(cfg.num_experts=4\) are not supported"):
        M.load_model("gpt2")
    assert started == []


def test_a_mixture_of_experts_checkpoint_folder_is_refused_before_its_weights_load(tiny_tl_configs, gpt2_dir,
                                                                                   monkeypatch):
    from transformers import AutoModelForCausalLM

    _moe_config(tiny_tl_configs, monkeypatch)
    started = []
    monkeypatch.setattr(AutoModelForCausalLM, "from_pretrained", lambda *a, **k: started.append(a))
    with pytest.raises(ValueError, match="mixture-of-experts models"):
        M.load_model(path=gpt2_dir, tl_name="gpt2")
    assert started == []


def test_a_bidirectional_model_is_refused_on_every_route(tiny_tl_configs, monkeypatch):
    import transformer_lens.loading_from_pretrained as tl_loading

    dense = tl_loading.convert_hf_model_config
    monkeypatch.setattr(tl_loading, "convert_hf_model_config",
                        lambda name, **kw: {**dense(name, **kw), "attention_dir": "bidirectional"})
    with pytest.raises(ValueError, match="attention_dir='bidirectional' is not supported"):
        M._hf_to_tl([_tiny_hf("gpt2")], None, "gpt2", device="cpu", dtype=torch.float32)
