"""auditd command arguments redacted as the command line they make.

Role: for the ``auditd`` parser (``auditd.py``), when its source redacts: an EXECVE record's
``aN`` arguments (and ``aN[i]`` chunks), with the event's earlier EXECVE arguments as context,
and a PROCTITLE's NUL-separated argv, are redacted by ``Redactor.argv`` as one command line
(``a0="mysql" a1="-pS3cret"`` holds a secret neither string shows alone). ``redact_argv`` masks
them in the record's data and says which keys changed, for the parser to show in msg.

State: none; the event's earlier records are passed in.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from agent.transforms.audit_fields import ARG
from agent.transforms.redact import mask_lead, mask_trail

# A command's arguments, each as its pieces, with its secrets masked (None: nothing to mask).
RedactArgv = Callable[[list[list[str]]], list[list[str]] | None]

_PROCTITLE = re.compile(r"(?<![\w-])proctitle=(?P<hex>(?:[0-9A-Fa-f]{2})+)(?![\w\"'])")


def redact_argv(
    redact: RedactArgv,
    data: dict[str, str],
    *,
    rtype: str,
    body: str,
    before: list[tuple[str, dict[str, str]]],
    logged: dict[str, int],
) -> dict[str, str]:
    """Mask the secrets of an EXECVE record's arguments, or a PROCTITLE's, in ``data``, as
    ``redact`` finds them in the command line; the keys changed, with their new values.

    Each string alone is redacted later as any field is, but a rule such as ``mysql -p`` needs
    the command before its option, which is in another argument (maybe of an earlier EXECVE
    record of the event, ``before``, with its own secrets already masked). A proctitle is the
    command's NUL-separated argv (cut at 128 bytes): redacted split at its NULs, not at the
    spaces ``data`` shows in their place.

    An argument too long for one record goes on in the next (``aN[i]`` chunks): neither record
    alone can tell whether the token at the cut is (part of) a secret, so the last token of a
    chunk that the next record continues, and the first token of a chunk that continues one,
    are masked, as the halves of a split line are (``mask_trail``, ``mask_lead``). ``logged``
    holds the event's chunks' lengths as logged (before any mask); this adds ``data``'s."""
    changed: dict[str, str] = {}
    if rtype == "PROCTITLE":
        title = data.get("proctitle")
        if title is None:
            return changed
        found = _PROCTITLE.search(body)
        if found is not None:
            text = bytes.fromhex(found["hex"]).decode("utf-8", errors="replace")
            args = [[arg] for arg in text.split("\x00")]
        else:
            args = [[title]]
        new = redact(args)
        if new is not None:
            changed["proctitle"] = data["proctitle"] = " ".join(
                piece for arg in new for piece in arg
            ).rstrip(" ")
        return changed
    context = _context(before)
    slots = arg_slots([*context, data])
    new = redact([[d[k] for d, k in pieces] for pieces in slots])
    cut = _cut_chunks(slots, context, data, logged)
    logged.update((key, len(value)) for key, value in data.items() if "[" in key)
    if new is not None:
        for pieces, values in zip(slots, new, strict=True):
            for (owner, key), value in zip(pieces, values, strict=True):
                # earlier records are shipped as they were
                if owner is data and data[key] != value:
                    changed[key] = data[key] = value
    for key, edge in cut:
        value = mask_lead(data[key]) if edge == "lead" else mask_trail(data[key])
        if value != data[key]:
            changed[key] = data[key] = value
    return changed


def _cut_chunks(
    slots: list[list[tuple[dict[str, str], str]]],
    context: list[dict[str, str]],
    data: dict[str, str],
    logged: dict[str, int],
) -> list[tuple[str, str]]:
    """The chunks of ``data`` at a cut between records: ("aN[i]", "lead") for one that goes on
    from an earlier record, ("aN[i]", "trail") for one that a later record may go on from: its
    chunks so far (their ``logged`` lengths) are not exactly its argument's ``aN_len`` (an
    unknown length counts as going on: a needless mask, never a leak)."""
    cut: list[tuple[str, str]] = []
    for pieces in slots:
        mine = [i for i, (owner, key) in enumerate(pieces) if owner is data and "[" in key]
        if not mine:
            continue
        first_key, last_key = pieces[mine[0]][1], pieces[mine[-1]][1]
        if mine[0] > 0 or not first_key.endswith("[0]"):
            cut.append((first_key, "lead"))
        index = first_key[1 : first_key.index("[")]
        declared = next((d[f"a{index}_len"] for d in (data, *context) if f"a{index}_len" in d), "")
        so_far = sum(
            len(owner[key]) if owner is data else logged.get(key, len(owner[key]))
            for owner, key in pieces[: mine[-1] + 1]
        )
        if not declared.isdigit() or int(declared) != so_far:
            cut.append((last_key, "trail"))
    return cut


# How much of an event's earlier EXECVE arguments is context for the next record's: more than
# a command's reach to its option (``rules._COMMAND_REACH``). Bounded, so that an event of many
# records costs time linear in them, not quadratic.
_CONTEXT_CHARS = 4096


def _context(before: list[tuple[str, dict[str, str]]]) -> list[dict[str, str]]:
    """The data of the last EXECVE records in ``before`` whose values hold at least
    ``_CONTEXT_CHARS`` characters (or all of them), in order."""
    taken: list[dict[str, str]] = []
    size = 0
    for rtype, data in reversed(before):
        if rtype != "EXECVE":
            continue
        taken.append(data)
        size += sum(map(len, data.values()))
        if size >= _CONTEXT_CHARS:
            break
    return taken[::-1]


def arg_slots(execves: list[dict[str, str]]) -> list[list[tuple[dict[str, str], str]]]:
    """Where each argument of ``execves`` (EXECVE records' data, in order) lives, in order of
    N: its (data, key) pieces, one ``aN`` or its ``aN[i]`` chunks in order (chunks win over an
    ``aN`` of the same N). ``auditd.execve_args`` joins them into argv."""
    whole: dict[int, tuple[dict[str, str], str]] = {}
    chunks: dict[int, dict[int, tuple[dict[str, str], str]]] = {}
    for data in execves:
        for key in data:
            m = ARG.fullmatch(key)
            if m is None:
                continue
            if m[2] is None:
                whole[int(m[1])] = (data, key)
            else:
                chunks.setdefault(int(m[1]), {})[int(m[2])] = (data, key)
    slots = {index: [slot] for index, slot in whole.items()}
    for index, parts in chunks.items():
        slots[index] = [parts[i] for i in sorted(parts)]
    return [slots[i] for i in sorted(slots)]
