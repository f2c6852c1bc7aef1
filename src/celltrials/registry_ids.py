"""Recognise trial-registry ids and give each one canonical key for merging.

Two records describe the same trial when they share a canonical key, e.g.
``EUCTR2020-001162-12-FR`` (ICTRP's per-member-state EU-CTR record) and a
ClinicalTrials.gov secondary id ``2020-001162-12`` both become
``EU:2020-001162-12``. Organisation study ids (``MSC-01``) are not registry
ids and never merge trials.
"""

from __future__ import annotations

import re
import unicodedata

from celltrials.models import RegistryId

# (registry, pattern, canonical form); patterns are anchored on word edges.
# EU-CTR suffixes a member state's code to each national record, and ``3RD``
# to the record of a trial's sites in third countries.
_PATTERNS: list[tuple[str, str]] = [
    ("ctgov", r"NCT\d{8}"),
    (
        "euctr",
        r"(?:EUCTR|EudraCT(?:\s*(?:Number|No\.?|number))?[:\s]*)?\d{4}-\d{6}-\d{2}(?:-\d{2})?(?:-(?:[A-Z]{2,3}|3RD))?",
    ),
    ("chictr", r"ChiCTR-?[A-Za-z]{0,4}-?\d{6,12}"),
    ("isrctn", r"ISRCTN\d{8}"),
    ("anzctr", r"ACTRN\d{14}"),
    ("irct", r"IRCT\d{8,}N\d+"),
    ("jprn", r"(?:JPRN-)?(?:UMIN\d{9}|jRCT[a-z]?\d{9,10}|JapicCTI-\d+|JMA-IIA\d+)"),
    ("drks", r"DRKS\d{8}"),
    ("ntr", r"(?:NTR\d{3,5}|NL-OMON\d+|NL\d{4,5})(?![\d.])"),
    ("tctr", r"TCTR\d{11}"),
    ("kct", r"KCT\d{7}"),
    ("ctri", r"CTRI/\d{4}/\d{2,3}/\d{6}"),
    ("pactr", r"PACTR\d{15,16}"),
    ("rebec", r"RBR-\w{6,8}"),
    ("slctr", r"SLCTR/\d{4}/\d{3}"),
    ("lbctr", r"LBCTR\d{10}"),
    ("rpcec", r"RPCEC\d{8}"),
    ("itmctr", r"ITMCTR\d+"),
]

_COMBINED = re.compile(
    "|".join(
        f"(?P<{name}_{i}>(?<![A-Za-z0-9]){pat}(?![A-Za-z0-9]))"
        for i, (name, pat) in enumerate(_PATTERNS)
    ),
    re.IGNORECASE,
)
_EU_CORE = re.compile(r"(\d{4}-\d{6}-\d{2})")


_NON_ASCII = re.compile(r"[^\x00-\x7f]")


def fold_id(text: str) -> str:
    """Registry-id text with Unicode compatibility forms folded to ASCII:
    full-width letters and digits (``ＮＣＴ０４３１５９８７``), and decimal digits of
    any script (Arabic-Indic ``٠٤٣``, Devanagari, …) become ``0-9``; the
    Unicode dashes become ``-``. ASCII text is returned unchanged (fast path)."""
    if not _NON_ASCII.search(text):
        return text
    text = unicodedata.normalize("NFKC", text)
    out = []
    for ch in text:
        if ch.isascii():
            out.append(ch)
            continue
        d = unicodedata.decimal(ch, None)
        if d is not None:
            out.append(str(d))
        elif unicodedata.category(ch) == "Pd":
            out.append("-")
        else:
            out.append(ch)
    return "".join(out)


def canonical_id(raw: str, *, is_primary: bool = False) -> RegistryId | None:
    """The canonical id for ``raw`` if the whole string is a registry id
    (digits of any script count as their ASCII digits)."""
    text = raw.strip()
    if len(text) == 11 and text.isascii() and text[3:].isdigit() and text[:3].upper() == "NCT":
        # a ClinicalTrials.gov id (what _COMBINED's first pattern matches), without the regex
        return RegistryId(key=text.upper(), raw=text, registry="ctgov", is_primary=is_primary)
    text = fold_id(text)
    m = _COMBINED.fullmatch(text)
    if not m:
        return None
    return _make(m, is_primary)


def find_ids(text: str) -> list[RegistryId]:
    """All registry ids mentioned in free text (``Other IDs``, secondary ids)."""
    out: list[RegistryId] = []
    seen: set[str] = set()
    for m in _COMBINED.finditer(fold_id(text or "")):
        rid = _make(m, False)
        if rid.key not in seen:
            seen.add(rid.key)
            out.append(rid)
    return out


def _make(m: re.Match[str], is_primary: bool) -> RegistryId:
    group = m.lastgroup or ""
    registry = group.rsplit("_", 1)[0]
    raw = m.group(0)
    if registry == "euctr":
        core = _EU_CORE.search(raw)
        assert core is not None
        key = f"EU:{core.group(1)}"
    elif registry == "ctgov":
        key = raw.upper()
    elif registry == "jprn":
        key = re.sub(r"^JPRN-", "", raw.upper())
    elif registry == "chictr":
        key = "ChiCTR" + raw[6:].upper()
    else:
        key = raw.upper()
    return RegistryId(key=key, raw=raw, registry=registry, is_primary=is_primary)


def registry_of(record_id: str) -> str:
    rid = canonical_id(record_id)
    return rid.registry if rid else "other"


def trial_id_for(record_id: str) -> str:
    """The id a merged trial is named by: the record id, except that EU-CTR's
    member-state suffix is dropped (one EudraCT number is one trial)."""
    m = re.fullmatch(
        r"(EUCTR\d{4}-\d{6}-\d{2})-(?:[A-Z]{2,3}|3RD)", record_id.strip(), re.IGNORECASE
    )
    return m.group(1).upper() if m else record_id.strip()
