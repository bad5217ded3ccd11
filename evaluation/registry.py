"""The evaluation protocols by name: the values of ``--eval_protocol``.

A new protocol is one module (a subclass of ``evaluation.protocol.EvalProtocol``) and its line
in :data:`PROTOCOLS`; the run (``training/``) takes it from here by name.
"""

from evaluation.retrieval_protocol import RetrievalProtocol
from evaluation.verification_protocol import VerificationProtocol

DEFAULT = "verification"
PROTOCOLS = {
    VerificationProtocol.name: VerificationProtocol,
    RetrievalProtocol.name: RetrievalProtocol,
}


def names():
    """The registered protocol names, in registration order."""
    return tuple(PROTOCOLS)


def protocol_class(name):
    """The protocol class registered as ``name``; ``ValueError`` (one line) otherwise."""
    try:
        return PROTOCOLS[name or DEFAULT]
    except KeyError:
        raise ValueError(f"--eval_protocol={name}: unknown evaluation protocol (choose one of "
                         f"{', '.join(PROTOCOLS)})") from None


def build(p):
    """The protocol of a params dict, bound to its settings (older params.json files have no
    ``eval_protocol``: verification, as they were run)."""
    return protocol_class(p.get("eval_protocol")).from_params(p)
