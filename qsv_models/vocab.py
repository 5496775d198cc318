"""The vocabulary fingerprint that decides whether a draft model and a target model can be paired.

Speculative decoding compares p and q token by token, so both models must map the same strings to the same ids.
``vocab_hash`` is the one definition of that check, used by the edge and imported by the cloud.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any


class TokenizerMismatchError(ValueError):
    """Draft and target tokenizers map tokens to different ids: their distributions cannot be compared."""


def _vocab_of(tokenizer: Any) -> dict[str, int]:
    """token string → id, added/special tokens included, for a ``tokenizers.Tokenizer`` or a transformers one."""
    getter = getattr(tokenizer, "get_vocab", None)
    if getter is None:
        raise TypeError(f"cannot read a vocabulary from {type(tokenizer).__name__}")
    try:
        vocab = getter(with_added_tokens=True)  # tokenizers.Tokenizer
    except TypeError:
        vocab = getter()  # transformers tokenizers (already include added tokens)
    return {str(tok): int(idx) for tok, idx in vocab.items()}


def vocab_hash(tokenizer: Any) -> str:
    """sha256 (hex) of the sorted (id, token) list of ``tokenizer``: equal hashes ⇔ identical token ↔ id maps."""
    pairs = sorted((idx, tok) for tok, idx in _vocab_of(tokenizer).items())
    blob = json.dumps(pairs, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    return hashlib.sha256(blob).hexdigest()


def check_same_vocab(draft_tokenizer: Any, target_tokenizer: Any, draft_name: str = "draft",
                     target_name: str = "target") -> str:
    """Raise :class:`TokenizerMismatchError` unless both tokenizers have the same vocab hash; return the hash."""
    draft_hash, target_hash = vocab_hash(draft_tokenizer), vocab_hash(target_tokenizer)
    if draft_hash != target_hash:
        draft_vocab, target_vocab = _vocab_of(draft_tokenizer), _vocab_of(target_tokenizer)
        differing = sorted(set(draft_vocab.items()) ^ set(target_vocab.items()), key=lambda kv: kv[1])[:5]
        raise TokenizerMismatchError(
            f"{draft_name} and {target_name} use different tokenizers (vocab hash {draft_hash[:12]} vs "
            f"{target_hash[:12]}; sizes {len(draft_vocab)} vs {len(target_vocab)}; first differing entries "
            f"{differing}). Speculative decoding needs the same token ids on both sides: pick a draft model from "
            f"the target's family."
        )
    return draft_hash
