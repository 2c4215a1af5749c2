"""Pair presets: validation of the TOML schema, and loading tiny local random-weight pairs through load_pair."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from latentreason import presets
from latentreason.pair import load_pair
from latentreason.presets import available_presets, read_preset, resolve_preset

REPO = Path(__file__).resolve().parents[1]
QUESTIONS = [
    "Janet's ducks lay 16 eggs per day. She eats three for breakfast every morning and bakes muffins with four. How much does she make?",
    "A robe takes 2 bolts of blue fiber and half that much white fiber. How many bolts in total does it take?",
    "Josh buys a house for $80,000 and puts in $50,000 in repairs. How much profit did he make?",
    "James runs 3 sprints 3 times a week. He runs 60 meters each sprint. How many total meters does he run a week?",
    "Question: Answer: Let's think step by step. The answer is 18.",
]
CHAT_TEMPLATE = "{% for m in messages %}<|user|>{{ m['content'] }}\n{% endfor %}{% if add_generation_prompt %}<|assistant|><think>\n{% endif %}"


def _tokenizer(chat: bool):
    """A tiny WordLevel tokenizer trained on a few GSM8K-like questions."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tk = Tokenizer(models.WordLevel(unk_token="<unk>"))
    tk.pre_tokenizer = pre_tokenizers.Whitespace()
    specials = ["<pad>", "<s>", "</s>", "<unk>", "<|user|>", "<|assistant|>", "<think>"]
    tk.train_from_iterator(QUESTIONS, trainers.WordLevelTrainer(special_tokens=specials))
    tok = PreTrainedTokenizerFast(tokenizer_object=tk, bos_token="<s>", eos_token="</s>", pad_token="<pad>", unk_token="<unk>")
    if chat:
        tok.chat_template = CHAT_TEMPLATE
    return tok


def _save_model(directory: Path, arch: str, chat: bool, seed: int) -> Path:
    from transformers import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

    tok = _tokenizer(chat)
    torch.manual_seed(seed)
    kw = dict(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=5, num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128, pad_token_id=0, bos_token_id=1, eos_token_id=2)
    model = Qwen2ForCausalLM(Qwen2Config(**kw)) if arch == "qwen2" else LlamaForCausalLM(LlamaConfig(**kw))
    model.save_pretrained(directory)
    tok.save_pretrained(directory)
    return directory


@pytest.fixture(scope="module", params=["qwen2", "llama"])
def tiny_pair_dir(request, tmp_path_factory) -> Path:
    """A directory with ``models/base`` and ``models/post_rl`` (with a chat template), random weights."""
    root = tmp_path_factory.mktemp(f"pair-{request.param}")
    _save_model(root / "models" / "base", request.param, chat=False, seed=0)
    _save_model(root / "models" / "post_rl", request.param, chat=True, seed=1)
    return root


def _write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


PRESET = """
name = "tiny"
task = "gsm8k"

[base]
model = "models/base"
prompt_template = "Question: {prompt}\\nAnswer: Let's think step by step.\\n"

[post_rl]
model = "./models/post_rl"
prompt_template = "{prompt}\\nPut your final answer within \\\\boxed{{}}."
chat_template = true

[defaults]
sites = ["resid_post@0.4", "resid_pre.4"]
dtype = "float32"
max_new_tokens = 32
"""


def test_load_pair_loads_a_local_preset_with_relative_model_paths(tiny_pair_dir):
    preset = _write(tiny_pair_dir / "tiny.toml", PRESET)
    pair = load_pair(preset, device="cpu")
    assert pair.name == "tiny" and pair.task == "gsm8k" and pair.source == str(preset)
    assert pair.base_spec.path == str((tiny_pair_dir / "models" / "base").resolve())
    assert pair.base_model.config.model_type in ("qwen2", "llama")
    assert not pair.base_model.training and pair.base_model.dtype == torch.float32
    assert pair.defaults["sites"] == ["resid_post.2", "resid_pre.4"] and pair.defaults["site"] == "resid_post.2"  # floor(0.4 * 5 layers)
    assert pair.defaults["max_new_tokens"] == 32 and pair.defaults["dtype"] == "float32"
    assert pair.base_tokenizer.padding_side == "left" and pair.same_tokenizer


def test_preset_prompts_use_the_plain_template_for_base_and_the_chat_template_for_post_rl(tiny_pair_dir):
    pair = load_pair(_write(tiny_pair_dir / "tiny.toml", PRESET), device="cpu")
    assert pair.format_prompt("base", "What is 2+3?") == "Question: What is 2+3?\nAnswer: Let's think step by step.\n"
    assert pair.format_prompt("post_rl", "What is 2+3?") == "<|user|>What is 2+3?\nPut your final answer within \\boxed{}.\n<|assistant|><think>\n"
    ids = pair.post_rl_tokenizer(pair.format_prompt("post_rl", "How many bolts"), return_tensors="pt").input_ids
    with torch.no_grad():
        assert pair.post_rl_model(ids).logits.shape[-1] == len(pair.post_rl_tokenizer)


def test_trust_remote_code_is_false_unless_the_preset_asks(tiny_pair_dir, monkeypatch):
    seen: list[bool] = []
    real = presets.load_model

    def spy(path, **kw):
        seen.append(kw["trust_remote_code"])
        return real(path, **kw)

    monkeypatch.setattr(presets, "load_model", spy)
    pair = load_pair(_write(tiny_pair_dir / "tiny.toml", PRESET), device="cpu")
    assert seen == [False, False] and not pair.base_spec.trust_remote_code and not pair.post_rl_spec.trust_remote_code
    seen.clear()
    asked = PRESET.replace("chat_template = true", "chat_template = true\ntrust_remote_code = true")
    pair = load_pair(_write(tiny_pair_dir / "asked.toml", asked), device="cpu")
    assert seen == [False, True] and pair.post_rl_spec.trust_remote_code


def test_router_site_resolves_against_the_post_rl_model_and_is_checked(tiny_pair_dir):
    pair = load_pair(_write(tiny_pair_dir / "tiny.toml", PRESET.replace("max_new_tokens = 32", 'max_new_tokens = 32\nrouter_site = "resid_post@0.9"')), device="cpu")
    assert pair.defaults["router_site"] == "resid_post.4" and pair.defaults["site"] == "resid_post.2"  # floor(0.9 * 5 layers)
    with pytest.raises(ValueError, match=r"router_site.*resid_post\.9"):
        load_pair(_write(tiny_pair_dir / "far.toml", PRESET.replace("max_new_tokens = 32", 'max_new_tokens = 32\nrouter_site = "resid_post.9"')), device="cpu")
    with pytest.raises(ValueError, match="router_site must be one site name"):
        read_preset(_write(tiny_pair_dir / "list.toml", PRESET.replace("max_new_tokens = 32", 'max_new_tokens = 32\nrouter_site = ["resid_post.1"]')))


def test_dtype_argument_overrides_the_preset(tiny_pair_dir):
    pair = load_pair(_write(tiny_pair_dir / "tiny.toml", PRESET), device="cpu", dtype="bfloat16")
    assert pair.base_model.dtype == torch.bfloat16 and pair.defaults["dtype"] == "bfloat16"


def test_site_beyond_the_base_model_is_refused_with_its_layers(tiny_pair_dir):
    bad = PRESET.replace('"resid_pre.4"', '"resid_post.9"')
    with pytest.raises(ValueError, match=r"resid_post\.9"):
        load_pair(_write(tiny_pair_dir / "bad.toml", bad), device="cpu")


@pytest.mark.parametrize(
    "edit,match",
    [
        (("task = \"gsm8k\"", "task = \"gsm8k\"\ntemperature = 1"), "'temperature' in the top level"),
        (("chat_template = true", "chat_template = true\nrevison = \"main\""), r"'revison' in \[post_rl\]"),
        (("max_new_tokens = 32", "max_new_tokens = 32\nsite = \"resid_post.1\""), r"'site' in \[defaults\]"),
        (("task = \"gsm8k\"", "task = \"aime\""), "unknown task 'aime'"),
        (("chat_template = true", "chat_template = \"yes\""), "chat_template must be true or false"),
        (("within \\\\boxed{{}}.", "within \\\\boxed{}."), "double other braces"),
        (("prompt_template = \"Question: {prompt}", "prompt_template = \"Question: {question}"), "not a valid template"),
        (("\"{prompt}\\nPut", "\"Solve this.\\nPut"), "no {prompt} placeholder"),
        (('"resid_pre.4"', '"resid_mid.4"'), "resid_mid"),
        (("dtype = \"float32\"", "dtype = \"float8\""), "float8"),
        (("max_new_tokens = 32", "max_new_tokens = 0"), "max_new_tokens"),
        (("model = \"./models/post_rl\"", "model = \"./models/missing\""), "does not exist"),
    ],
)
def test_invalid_presets_are_refused_with_the_offending_key(tiny_pair_dir, edit, match):
    old, new = edit
    assert old in PRESET, old
    path = _write(tiny_pair_dir / "invalid.toml", PRESET.replace(old, new))
    with pytest.raises((ValueError, FileNotFoundError), match=match):
        read_preset(path)


def test_preset_without_a_model_table_says_what_to_add(tmp_path):
    path = _write(tmp_path / "p.toml", '[base]\nmodel = "Qwen/Qwen2.5-Math-1.5B"\n')
    with pytest.raises(ValueError, match=r"no \[post_rl\] table"):
        read_preset(path)


def test_invalid_toml_names_the_file(tmp_path):
    path = _write(tmp_path / "broken.toml", "[base\nmodel = 1\n")
    with pytest.raises(ValueError, match="broken.toml is not valid TOML"):
        read_preset(path)


def test_hub_ids_stay_hub_ids_and_local_directories_resolve_against_the_preset(tiny_pair_dir):
    cfg = read_preset(_write(tiny_pair_dir / "tiny.toml", PRESET.replace('"models/base"', '"Qwen/Qwen2.5-Math-1.5B"')))
    assert cfg["base"].path == "Qwen/Qwen2.5-Math-1.5B"
    assert cfg["post_rl"].path == str((tiny_pair_dir / "models" / "post_rl").resolve())


def test_shipped_presets_resolve_by_name_and_validate():
    names = available_presets()
    assert {"organism", "qwen-math-1.5b", "llama-8b", "qwen-14b", "qwen-32b-qwq"} <= set(names)
    expected = {
        "qwen-math-1.5b": ("Qwen/Qwen2.5-Math-1.5B", "deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B"),
        "llama-8b": ("meta-llama/Llama-3.1-8B", "deepseek-ai/DeepSeek-R1-Distill-Llama-8B"),
        "qwen-14b": ("Qwen/Qwen2.5-14B", "deepseek-ai/DeepSeek-R1-Distill-Qwen-14B"),
        "qwen-32b-qwq": ("Qwen/Qwen2.5-32B", "Qwen/QwQ-32B"),
    }
    for name, (base, post_rl) in expected.items():
        cfg = read_preset(resolve_preset(name))
        assert (cfg["base"].path, cfg["post_rl"].path) == (base, post_rl)
        assert not cfg["base"].chat_template and cfg["post_rl"].chat_template
        assert not cfg["base"].trust_remote_code and not cfg["post_rl"].trust_remote_code
        assert cfg["defaults"]["dtype"] == "bfloat16" and cfg["defaults"]["sites"] == ["resid_post@0.4"]
        assert "\\boxed{}" in cfg["post_rl"].prompt_template.format(prompt="Q")


def test_each_shipped_preset_has_one_copy_in_the_checkout():
    shipped = {p.name for p in presets.presets_dir().glob("*.toml")}
    copies = [p for p in REPO.glob("configs/*.toml") if p.name in shipped]
    assert copies == [], f"{copies} repeat shipped presets: keep only src/latentreason/configs (users copy one with `latentreason presets copy`)"


def test_a_preset_name_reads_the_shipped_file_and_warns_about_an_edited_copy_here(tmp_path, monkeypatch, caplog):
    shipped = presets.presets_dir() / "qwen-math-1.5b.toml"
    monkeypatch.chdir(tmp_path)
    (tmp_path / "configs").mkdir()
    (tmp_path / "configs" / "qwen-math-1.5b.toml").write_bytes(shipped.read_bytes())  # an unedited copy: nothing to say
    with caplog.at_level("WARNING", logger="latentreason.presets"):
        assert resolve_preset("qwen-math-1.5b") == shipped
    assert caplog.text == ""
    mine = tmp_path / "configs" / "qwen-math-1.5b.toml"
    mine.write_text(shipped.read_text().replace('dtype = "bfloat16"', 'dtype = "float32"'))  # the user's edit
    with caplog.at_level("WARNING", logger="latentreason.presets"):
        assert resolve_preset("qwen-math-1.5b") == shipped
    assert str(shipped) in caplog.text and f"not {mine}" in caplog.text and f"--pair {mine}" in caplog.text
    assert read_preset(resolve_preset("configs/qwen-math-1.5b.toml"))["defaults"]["dtype"] == "float32"  # the path is the user's file
    (tmp_path / "organism.toml").write_text((presets.presets_dir() / "organism.toml").read_text().replace("max_new_tokens = 128", "max_new_tokens = 64"))
    caplog.clear()
    with caplog.at_level("WARNING", logger="latentreason.presets"):
        load_pair("organism")  # the shipped pair directory, whatever organism.toml here says
    assert f"not {tmp_path / 'organism.toml'}" in caplog.text


def test_presets_copy_gives_an_editable_file_and_never_overwrites(tmp_path):
    from click.testing import CliRunner

    from latentreason.cli import main

    runner = CliRunner()
    listed = runner.invoke(main, ["presets", "list"])
    assert listed.exit_code == 0 and "qwen-math-1.5b" in listed.output and "deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B" in listed.output
    shown = runner.invoke(main, ["presets", "show", "llama-8b"])
    assert shown.exit_code == 0 and (presets.presets_dir() / "llama-8b.toml").read_text() in shown.output
    dest = tmp_path / "mine.toml"
    res = runner.invoke(main, ["presets", "copy", "qwen-math-1.5b", str(dest)])
    assert res.exit_code == 0 and f"--pair {dest}" in res.output
    assert dest.read_bytes() == (presets.presets_dir() / "qwen-math-1.5b.toml").read_bytes()
    dest.write_text(dest.read_text().replace('name = "qwen-math-1.5b"', 'name = "mine"'))
    again = runner.invoke(main, ["presets", "copy", "qwen-math-1.5b", str(dest)])
    assert again.exit_code != 0 and "already exists" in again.output and "Traceback" not in again.output
    assert read_preset(resolve_preset(str(dest)))["name"] == "mine"  # the edit survived and is what the path loads
    unknown = runner.invoke(main, ["presets", "copy", "qwen-math-7b", str(tmp_path / "x.toml")])
    assert unknown.exit_code != 0 and "qwen-math-1.5b" in unknown.output


def test_a_missing_preset_file_named_like_a_shipped_one_says_how_to_use_it(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(FileNotFoundError, match=r"--pair organism .*presets copy organism"):
        resolve_preset("configs/organism.toml")


def test_unknown_preset_name_lists_the_shipped_ones():
    with pytest.raises(FileNotFoundError, match="qwen-math-1.5b"):
        resolve_preset("qwen-math-7b")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        resolve_preset("nowhere/p.toml")


def test_organism_preset_loads_the_shipped_organism_or_says_how_to_train_it():
    from latentreason.organism import DEFAULT_DIR

    if not (DEFAULT_DIR / "base" / "config.json").exists():
        with pytest.raises(FileNotFoundError, match="latentreason organism train --out"):
            load_pair(resolve_preset("organism"), device="cpu")
        return
    pair = load_pair(resolve_preset("organism"), device="cpu")
    reference = load_pair("organism")
    assert pair.task == "arith" and pair.defaults["site"] == "resid_post.1" and pair.defaults["router_site"] == reference.defaults["router_site"] == "resid_post.2"
    assert pair.fingerprint("base") == reference.fingerprint("base")
    assert pair.fingerprint("post_rl") == reference.fingerprint("post_rl")
    assert pair.format_prompt("base", "3+4=") == reference.format_prompt("base", "3+4=")
    assert set(pair.extras) == set(reference.extras) == {"single_problem_rl"}  # so single-problem interventions are not skipped
    assert pair.fingerprint("single_problem_rl") == reference.fingerprint("single_problem_rl")
    assert pair.task_config == reference.task_config and pair.task_config


def test_a_copied_organism_preset_is_still_the_organism_pair(tmp_path):
    from latentreason.organism import DEFAULT_DIR

    if not (DEFAULT_DIR / "pair.json").exists():
        pytest.skip("the shipped organism is not installed")
    copy = presets.copy_preset("organism", tmp_path / "org.toml")
    pair = load_pair(copy, device="cpu")
    assert set(pair.extras) == {"single_problem_rl"} and pair.source == str(copy)
    other = _write(tmp_path / "half.toml", copy.read_text().replace("latentreason:organism/default/post_rl", "latentreason:organism/default/single_problem_rl"))
    assert load_pair(other, device="cpu").extras == {}  # not the organism pair's two models: nothing borrowed from its pair.json
