"""A zero-compute verifier handler for timing the transport alone (``qsv verifier --echo``,
benchmarks/bench_transport.py): it accepts every draft token and returns token 0 as the bonus."""

from __future__ import annotations

from qsv_wire.protocol import DraftRound, ErrorCode, ErrorReply, Feedback, OpenSession


class EchoVerifier:
    """The verifier-handler interface of ``cloud_verifier.mqtt_service`` (open / verify / close), with no model."""

    def __init__(self, vocab_size: int = 50272) -> None:
        self.vocab_size = vocab_size
        self.positions: dict[int, int] = {}

    def open(self, msg: OpenSession) -> int | ErrorReply:
        self.positions[msg.session_id] = len(msg.history)
        return len(msg.history)

    def close(self, session_id: int) -> None:
        self.positions.pop(session_id, None)

    def verify(self, msg: DraftRound) -> Feedback | ErrorReply:
        pos = self.positions.get(msg.session_id)
        if pos is None:
            return ErrorReply(ErrorCode.UNKNOWN_SESSION, "session not held here", msg.session_id, msg.round_seq)
        self.positions[msg.session_id] = pos + msg.draft_len + 1
        return Feedback(msg.session_id, msg.round_seq, msg.position, msg.draft_len, 0, (1.0,) * msg.draft_len)
