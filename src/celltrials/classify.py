"""Rule-based cell-therapy classifier (issue 7).

The rules are data (``taxonomy/taxonomy.yaml``); this module decides *where*
to look. It labels the **investigational product**: what the experimental arm
receives, read from intervention names / other names / descriptions,
experimental-arm texts and titles. Eligibility criteria, outcomes and
comparator arms are never read for product labels, and a cell mention that
follows a background cue in the same clause ("after autologous stem cell
transplant", "previously treated with CAR-T", "without MSC") is ignored.
Summaries are read only when titles and interventions name a product
generically ("stem cell product", a code name of type Biological).

Every label carries :class:`Evidence` (field, value, source field, matched
text and its span in that source field's text).

Speed: each field's patterns are matched by :mod:`celltrials.taxonomy.engine`
(a literal prefilter, then a few compiled patterns; linear in text length);
:func:`celltrials.classify_parallel.classify_many` spreads trials over cores;
see ``benchmarks/classify.py``.
"""

from __future__ import annotations

import hashlib
import re
from bisect import bisect_left, bisect_right, insort
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from itertools import pairwise
from typing import Any, Final, NamedTuple

from celltrials.models import ParsedRecord
from celltrials.taxonomy.engine import new_hit
from celltrials.taxonomy.loader import CompiledField, Entry, Hit, Taxonomy, default_taxonomy

# (module constants are Final: compiled, each use is the value, not a lookup in
# the module's dict)

# segment roles
TITLE: Final = "title"
INTERVENTION: Final = "intervention"
ARM: Final = "arm"
COMPARATOR: Final = "comparator"
KEYWORD: Final = "keyword"
SUMMARY: Final = "summary"
CONDITION: Final = "condition"
MESH: Final = "mesh"
MESH_ANCESTOR: Final = "mesh_ancestor"

_PRIMARY_ROLES: Final = frozenset({TITLE, INTERVENTION, ARM})
_COMPARATOR_ARM_TYPES: Final = frozenset(
    {"ACTIVE_COMPARATOR", "PLACEBO_COMPARATOR", "SHAM_COMPARATOR", "NO_INTERVENTION"}
)
_IMMUNE_TARGETED: Final = frozenset({"car_t", "car_nk", "tcr_t", "macrophage", "gamma_delta_t"})
_CLAUSE_BREAKS: Final = ".;:,[]\n|"  # (where a background cue's clause ends)
_CONJUNCTION: Final = re.compile(
    r"(?<!\w)(?:and|or|plus|with|versus|vs\.?|combined|combination|together|followed|then|compared)(?!\w)|[,;+&/]",
    re.I,
)
_WS: Final = re.compile(r"\s+")
#: the ASCII white space of ``str.split()`` (``str.isspace()``: \t \n \v \f \r,
#: the separators \x1c-\x1f and the space) as spaces, for :func:`same_text_key`
_ASCII_WS_TO_SPACE: Final = bytes(32 if o < 128 and chr(o).isspace() else o for o in range(256))
_SENTENCE_BREAK: Final = re.compile(r"[;|\n]|[.:](?:\s|$)")
_SENTENCE: Final = re.compile(r"[^.!?\n]+(?:[.!?]+|(?=\n)|$)")
#: what joins a mention to the one before it so that it shares that one's role: an
#: abbreviation in parentheses or a coordination ("after chimeric antigen receptor
#: T-cell therapy (CAR-T)", "undergoing stem cell transplantation or CAR-T cell
#: therapy"); at most two words ("therapy", "cell transplantation") and an abbreviation
#: in parentheses ("Bone Marrow Transplant (BMT) or CAR-T") may end the first
_JOINED_TO_PREVIOUS: Final = re.compile(
    r"[\s)-]*(?:[\w-]+[\s)-]+){0,2}?(?:\([\w -]{1,20}\)[\s-]*)?(?:\(|(?:and|or|and/or|/)(?!\w))\s*$",
    re.I,
)
_ADJOINS: Final = re.compile(r"[\s-]*")  # (a word that continues the mention before it)
_CODE_NAME: Final = re.compile(r"(?<![\w-])[A-Za-z]{1,12}[- ]?\d{2,}[\w-]*")
_IND_TIER: Final = {CONDITION: 0, MESH: 1, TITLE: 2, MESH_ANCESTOR: 3, KEYWORD: 3, SUMMARY: 4}

LABEL_COLUMNS: Final = [
    "registry_id",
    "is_cell_therapy",
    "cell_type",
    "msc_source",
    "origin",
    "product_form",
    "indication_group",
    "therapeutic_area",
]


class Segment:
    """One piece of trial text with the field it came from and its role (a value:
    compared and hashed by its fields; not changed once made).

    A plain class, not a dataclass: a dataclass's ``__init__`` is Python code
    even when mypyc compiles this module (a frozen one's sets each field
    through ``object.__setattr__``), and every trial makes ~20 segments."""

    __slots__ = ("procedure", "role", "source", "text")

    def __init__(self, source: str, role: str, text: str, procedure: bool = False) -> None:
        self.source = source  # e.g. "title", "interventions[0].name", "conditions[1]"
        self.role = role
        self.text = text
        self.procedure = procedure  # from an intervention of registry type PROCEDURE / DEVICE

    def _key(self) -> tuple[str, str, str, bool]:
        return (self.source, self.role, self.text, self.procedure)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Segment):
            return NotImplemented
        return self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())

    def __repr__(self) -> str:
        return (
            f"Segment(source={self.source!r}, role={self.role!r}, text={self.text!r}, "
            f"procedure={self.procedure!r})"
        )


#: :func:`same_text_key` of recent short texts (conditions, MeSH terms, intervention
#: names and arm labels recur across a registry's trials; cleared when full)
_SHORT_KEYS: Final[dict[str, str]] = {}
_SHORT_KEY_LEN: Final = 80
_SHORT_KEYS_MAX: Final = 16384


def same_text_key(text: str) -> str:
    """``" ".join(text.lower().split())``: the text lower-cased with its white space
    runs as single spaces and none at either end (two texts of a trial that give
    the same key are one text, see :meth:`TrialText.from_records`).

    ASCII text (nearly all) takes a path that makes no word objects: its white
    space becomes spaces by a byte table and runs of spaces are halved until none
    is left; only a text with other characters is split into words. Short texts'
    keys are kept: most of a trial's texts are short, and for them the calls
    cost more than the characters (a dictionary look-up is a fraction of it)."""
    if len(text) > _SHORT_KEY_LEN:
        return _text_key(text)
    got = _SHORT_KEYS.get(text)
    if got is None:
        if len(_SHORT_KEYS) >= _SHORT_KEYS_MAX:
            _SHORT_KEYS.clear()
        got = _SHORT_KEYS[text] = _text_key(text)
    return got


def _text_key(text: str) -> str:
    low = text.lower()
    if not low.isascii():
        return " ".join(low.split())
    b = low.encode("ascii").translate(_ASCII_WS_TO_SPACE)
    while b"  " in b:
        b = b.replace(b"  ", b" ")
    return b.strip(b" ").decode("ascii")


@dataclass(slots=True, init=False)
class TrialText:
    """The texts of one trial the classifier reads (one or several merged records)."""

    trial_id: str
    segments: list[Segment]

    # (written out: a dataclass's generated __init__ is Python code even when mypyc
    # compiles this module, see Segment; one per trial)
    def __init__(self, trial_id: str, segments: list[Segment] | None = None) -> None:
        self.trial_id = trial_id
        self.segments = [] if segments is None else segments

    @classmethod
    def from_record(cls, rec: ParsedRecord, trial_id: str | None = None) -> TrialText:
        return cls.from_records([rec], trial_id or rec.record_id)

    @classmethod
    def from_records(
        cls,
        recs: Sequence[ParsedRecord],
        trial_id: str | None = None,
        taxonomy: Taxonomy | None = None,
    ) -> TrialText:
        """Merge the texts of several records of one trial (identical texts once).

        Interventions given only to comparator arms (registry arm type, or an
        ICTRP group label such as "Control group") are kept as comparator text."""
        tid = trial_id or (recs[0].record_id if recs else "")
        comp_re = (taxonomy or default_taxonomy()).comparator_prefix
        segs: list[Segment] = []
        seen: set[tuple[str, str]] = set()
        multi = len(recs) > 1

        def add(source: str, role: str, text: str, procedure: bool = False, rec_i: int = 0) -> None:
            if not text:
                return
            text = str(text)
            # ≡ _WS.sub(" ", text.strip().lower()): str.split and \s both split at
            # str.isspace() characters, and lower-casing makes no white space
            key = (role, same_text_key(text))
            if not key[1] or key in seen:
                return
            seen.add(key)
            src = f"records[{rec_i}].{source}" if multi else source
            segs.append(Segment(src, role, text, procedure))

        for ri, rec in enumerate(recs):
            add("title", TITLE, rec.title, rec_i=ri)
            add("official_title", TITLE, rec.official_title, rec_i=ri)
            add("acronym", TITLE, rec.acronym, rec_i=ri)
            comp_arms = {
                a.label.strip().lower()
                for a in rec.arms
                if (a.type or "").upper() in _COMPARATOR_ARM_TYPES
            }
            exp_arms = {
                a.label.strip().lower()
                for a in rec.arms
                if (a.type or "").upper() not in _COMPARATOR_ARM_TYPES
            }
            for i, iv in enumerate(rec.interventions):
                labels = {x.strip().lower() for x in iv.arm_labels}
                comparator = (
                    (bool(labels) and labels <= comp_arms and not (labels & exp_arms))
                    or (
                        bool(iv.arm_labels)
                        and all(comp_re.match(x.strip() + ":") for x in iv.arm_labels)
                    )
                    or bool(comp_re.match(iv.name))
                )
                itype = (iv.type or "").upper()
                proc = itype in (
                    "PROCEDURE",
                    "DEVICE",
                    "RADIATION",
                    "BEHAVIORAL",
                    "DIAGNOSTIC_TEST",
                )
                role = COMPARATOR if comparator else INTERVENTION
                add(f"interventions[{i}].name", role, iv.name, proc, ri)
                for j, other in enumerate(iv.other_names):
                    add(f"interventions[{i}].other_names[{j}]", role, other, proc, ri)
                add(f"interventions[{i}].description", role, iv.description, proc, ri)
            for i, arm in enumerate(rec.arms):
                role = COMPARATOR if (arm.type or "").upper() in _COMPARATOR_ARM_TYPES else ARM
                add(f"arms[{i}].label", role, arm.label, rec_i=ri)
                add(f"arms[{i}].description", role, arm.description, rec_i=ri)
            for i, kw in enumerate(rec.keywords):
                add(f"keywords[{i}]", KEYWORD, kw, rec_i=ri)
            for i, cond in enumerate(rec.conditions):
                add(f"conditions[{i}]", CONDITION, cond, rec_i=ri)
            for i, term in enumerate(rec.mesh_terms):
                add(f"mesh_terms[{i}]", MESH, term, rec_i=ri)
            for i, term in enumerate(rec.mesh_ancestors):
                add(f"mesh_ancestors[{i}]", MESH_ANCESTOR, term, rec_i=ri)
            add("brief_summary", SUMMARY, rec.brief_summary, rec_i=ri)
            add("detailed_description", SUMMARY, rec.detailed_description, rec_i=ri)
        return cls(tid, segs)

    def text_of(self, source: str) -> str:
        for s in self.segments:
            if s.source == source:
                return s.text
        return ""

    def digest(self) -> str:
        # (one update of the joined texts: the same hash as one per segment, at
        # a fraction of the calls)
        parts: list[str] = []
        for s in self.segments:
            parts += (s.source, "\x1f", s.role, "\x1f", s.text, "\x1e")
        return hashlib.sha256("".join(parts).encode()).hexdigest()[:16]


class Evidence(NamedTuple):
    """The text that gave a label: ``text`` is ``source_field``'s text from ``start``
    to ``end``. A named tuple (immutable, and made in a fraction of a frozen
    dataclass's time: a trial has about seven)."""

    field: str
    value: str
    source_field: str
    text: str
    start: int
    end: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "field": self.field,
            "value": self.value,
            "source_field": self.source_field,
            "text": self.text,
            "start": self.start,
            "end": self.end,
        }


def new_evidence(
    field: str, value: str, source_field: str, text: str, start: int, end: int
) -> Evidence:
    """``Evidence(...)`` without the named tuple's ``__new__`` (see
    :func:`celltrials.taxonomy.engine.new_hit`)."""
    return tuple.__new__(Evidence, (field, value, source_field, text, start, end))


@dataclass(slots=True, init=False)
class TrialLabels:
    trial_id: str
    is_cell_therapy: bool
    cell_type: list[str]
    msc_source: list[str]
    origin: str
    product_form: list[str]
    indication_group: str
    therapeutic_area: list[str]
    targets: list[str]
    dose: list[str]
    route: list[str]
    combinations: list[str]
    manufacturing: list[str]
    evidence: list[Evidence]
    taxonomy_version: str
    input_hash: str

    # (written out: a dataclass's generated __init__ is Python code even when mypyc
    # compiles this module, see Segment; one per trial)
    def __init__(
        self,
        trial_id: str,
        is_cell_therapy: bool,
        cell_type: list[str],
        msc_source: list[str],
        origin: str,
        product_form: list[str],
        indication_group: str,
        therapeutic_area: list[str],
        targets: list[str] | None = None,
        dose: list[str] | None = None,
        route: list[str] | None = None,
        combinations: list[str] | None = None,
        manufacturing: list[str] | None = None,
        evidence: list[Evidence] | None = None,
        taxonomy_version: str = "",
        input_hash: str = "",
    ) -> None:
        self.trial_id = trial_id
        self.is_cell_therapy = is_cell_therapy
        self.cell_type = cell_type
        self.msc_source = msc_source
        self.origin = origin
        self.product_form = product_form
        self.indication_group = indication_group
        self.therapeutic_area = therapeutic_area
        self.targets = [] if targets is None else targets
        self.dose = [] if dose is None else dose
        self.route = [] if route is None else route
        self.combinations = [] if combinations is None else combinations
        self.manufacturing = [] if manufacturing is None else manufacturing
        self.evidence = [] if evidence is None else evidence
        self.taxonomy_version = taxonomy_version
        self.input_hash = input_hash

    def to_row(self, registry_id: str | None = None) -> dict[str, str]:
        """One row of the labels file (multi-values ``;``-joined, sorted)."""
        return {
            "registry_id": registry_id or self.trial_id,
            "is_cell_therapy": "yes" if self.is_cell_therapy else "no",
            "cell_type": ";".join(sorted(self.cell_type)),
            "msc_source": ";".join(sorted(self.msc_source)),
            "origin": self.origin,
            "product_form": ";".join(sorted(self.product_form)),
            "indication_group": self.indication_group,
            "therapeutic_area": ";".join(sorted(self.therapeutic_area)),
        }

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = dict(self.to_row())
        d["trial_id"] = self.trial_id
        d.pop("registry_id")
        d.update(
            {
                "targets": self.targets,
                "dose": self.dose,
                "route": self.route,
                "combinations": self.combinations,
                "manufacturing": self.manufacturing,
                "taxonomy_version": self.taxonomy_version,
                "input_hash": self.input_hash,
                "evidence": [e.to_dict() for e in self.evidence],
            }
        )
        return d


# ---------------------------------------------------------------------------
# internals


@dataclass(slots=True, init=False)
class _Mention:
    seg: Segment
    hit: Hit
    values: dict[str, tuple[str, ...]]

    # (written out: a dataclass's generated __init__ is Python code even when mypyc
    # compiles this module, see Segment; a cell-therapy trial makes several)
    def __init__(self, seg: Segment, hit: Hit, values: dict[str, tuple[str, ...]]) -> None:
        self.seg = seg
        self.hit = hit
        self.values = values


def _mask(text: str, fld: CompiledField, alone: bool = False) -> str:
    """Blank out exclusion matches (keeping offsets; ``alone``: see CompiledField.hits)."""
    hits = fld.hits(text, alone=alone)
    if not hits:
        return text
    # (the text between the hits sliced, not the text made a list of characters)
    parts: list[str] = []
    done = 0  # blanked or copied up to here
    for h in hits:
        start = h.start if h.start > done else done
        if h.end > start:
            parts.append(text[done:start])
            parts.append(" " * (h.end - start))
            done = h.end
    parts.append(text[done:])
    return "".join(parts)


def _is_background(tax: Taxonomy, text: str, start: int) -> bool:
    lo = max(0, start - 80)
    # cut after the last clause break (one rfind per break character: the regex
    # ".*[breaks]" took longer, backtracking over the window)
    for ch in _CLAUSE_BREAKS:
        k = text.rfind(ch, lo, start)
        if k >= 0:
            lo = k + 1
    window = text[lo:start]
    if not window.strip():
        return False
    gate = tax.background_gate
    if gate is not None and not gate.may_match(window):
        return False  # (no cue's literal: the regex cannot match)
    return tax.background_cue.search(window) is not None


def _mention_start(m: _Mention) -> int:
    return m.hit.start


def _hit_start(h: Hit) -> int:
    return h.start


def _hit_end(h: Hit) -> int:
    return h.end


def _derivative_attached(text: str, hit: Hit, derivs: list[Hit]) -> bool:
    """Whether a cell mention only names the source of an EV/secretome product.

    ``derivs`` are one segment's hits, in order: only those within 40 characters
    can qualify, found by bisection (linear time over a long text)."""
    lo = bisect_left(derivs, hit.start - 40, key=_hit_end)
    hi = bisect_right(derivs, hit.end + 40, key=_hit_start)
    for d in derivs[lo:hi]:
        if d.start >= hit.end:
            gap = text[hit.end : d.start]
        elif d.end <= hit.start:
            gap = text[d.end : hit.start]
        else:
            return True
        if len(gap) <= 40 and not _CONJUNCTION.search(gap):
            return True
    return False


_NOT_A_CODE: Final = re.compile(
    r"(?i)covid[- ]?19|sars[- ]cov[- ]?2|h1n1|h7n9|ncov[- ]?2019|2019[- ]ncov|phase[- ]?\d+|type[- ]?\d|day[- ]?\d+|week[- ]?\d+|cd\d+|il[- ]?\d+|[a-z]+[- ]?20\d\d"
)


def _subject_study(cues: CompiledField, primary: list[Segment]) -> bool:
    """A title naming a study-subject cue (imaging, exercise...), or intervention
    names that are all mostly such cues."""
    if any(s.role == TITLE and cues.search(s.text) for s in primary):
        return True
    names = [s for s in primary if s.role == INTERVENTION and s.source.endswith(".name")]
    return bool(names) and all(
        2 * sum(h.end - h.start for h in cues.hits(s.text)) >= len(s.text.strip()) for s in names
    )


def _names_code(text: str, pos: int, codes: list[str]) -> bool:
    """Whether the sentence of ``text`` around ``pos`` names one of ``codes``."""
    lo = max(text.rfind(". ", 0, pos), text.rfind("\n", 0, pos)) + 1
    hi = min((i for i in (text.find(". ", pos), text.find("\n", pos)) if i >= 0), default=len(text))
    sentence = text[lo:hi].lower()
    return any(c.lower() in sentence for c in codes)


def _describes_other_cells(
    seg: Segment, h: Hit, found: list[_Mention], other: list[_Mention]
) -> bool:
    """Whether the cell mention an origin word belongs to (the next one after it in
    the same text, or the one containing it) is not the investigational product."""
    best: tuple[int, bool] | None = None
    for kept, ms in ((True, found), (False, other)):
        for m in ms:
            if m.seg is not seg or m.hit.end <= h.start:
                continue
            dist = max(0, m.hit.start - h.end)
            if dist <= 60 and (best is None or dist < best[0]):
                best = (dist, kept)
    return best is not None and not best[1]


_CAR_ON_OTHER_CELLS: Final = frozenset({"car_nk", "macrophage", "dc"})
_NAMES_T_CELLS: Final = re.compile(
    r"(?i)(?<![a-z])T(?![a-z])|T[- ]?cells?|T[- ]?lymphocytes?|CAR-?T|CART|STAR|TRuC|CTL|γδ|gamma|NKT"
)
_VAGUE_CANCER: Final = re.compile(
    r"(?i)neoplasms?|malignan\w*|tumou?rs?|metasta\w*|oncolog\w*|hematologic(?:al)? (?:malignan\w*|cancers?|neoplasms?)|haematologic(?:al)? (?:malignan\w*|cancers?|neoplasms?)"
)
_DERIVED: Final = re.compile(r"\s*\)?\s*[-–]?\s*derived\b", re.I)
_PLURIPOTENT: Final = frozenset({"ipsc_derived", "esc_derived"})


def _drop_sources(found: list[_Mention]) -> list[_Mention]:
    """ "X-derived Y" names one product: Y made from X. Keep Y (or X when X is a
    pluripotent line: the product is then ipsc/esc-derived)."""
    drop: set[int] = set()
    by_seg: dict[int, list[_Mention]] = {}
    for m in found:
        by_seg.setdefault(id(m.seg), []).append(m)
    for ms in by_seg.values():
        ms.sort(key=lambda m: m.hit.start)
        for a, b in pairwise(ms):
            text = a.seg.text
            dm = _DERIVED.match(text, a.hit.end)
            if (
                dm is None
                or b.hit.start - dm.end() > 40
                or "cell_type" not in a.values
                or "cell_type" not in b.values
            ):
                continue
            if set(a.values["cell_type"]) & _PLURIPOTENT:
                drop.add(id(b))
            elif a.values["cell_type"] != b.values["cell_type"]:
                drop.add(id(a))
    return [m for m in found if id(m) not in drop] if drop else found


class _Masks:
    """Exclusion-masked segment texts (PRP, lab counts, lymphoma... blanked).

    Masking costs a scan, so segments in ``lazy`` are masked only once a field
    could match them at all (a match in the masked text is always a match in
    the raw text too)."""

    __slots__ = ("done", "exclusions", "lazy")

    def __init__(self, exclusions: CompiledField) -> None:
        self.exclusions = exclusions
        self.done: dict[int, str] = {}
        self.lazy: set[int] = set()

    def force(self, seg: Segment) -> str:
        t = self.done.get(id(seg))
        if t is None:
            # (a summary is read by few fields unless it names the product: then the
            # shared pass over it is at hand already, see CompiledField.hits)
            t = self.done[id(seg)] = _mask(seg.text, self.exclusions, seg.role == SUMMARY)
            self.lazy.discard(id(seg))
        return t

    def peek(self, seg: Segment) -> str:
        return self.done.get(id(seg), seg.text)

    def text(self, seg: Segment, fld: CompiledField) -> str | None:
        """The text to scan for ``fld``; None when ``fld`` cannot match it."""
        t = self.done.get(id(seg))
        if t is not None:
            return t
        if id(seg) not in self.lazy:
            return seg.text
        if not fld.search(seg.text):
            return None
        return self.force(seg)


def _without_type(found: list[_Mention], value: str) -> list[_Mention]:
    """``found`` less the mentions naming only the cell type ``value`` (a named
    product naming it among others keeps it)."""
    return [
        m
        for m in found
        if value not in m.values.get("cell_type", ()) or len(m.values.get("cell_type", ())) > 1
    ]


@dataclass(slots=True, eq=False, init=False)
class TrialContext:
    """What the labelling steps of :meth:`Classifier.classify` know about one trial.

    :meth:`Classifier.context` makes it; each step reads what earlier steps set
    and sets its own fields (named beside each). ``evidence`` grows in step
    order, which is the order of the labels' evidence."""

    trial: TrialText
    #: titles, interventions and arms of the experimental arms: where a product is named
    primary: list[Segment]
    #: summaries and keywords (keywords describe the setting as often as the product)
    summaries: list[Segment]
    masked: _Masks
    evidence: list[Evidence]
    #: mentions of the investigational product (find_mentions … drop_catch_all_types)
    found: list[_Mention]
    #: cell mentions that are not the product (background cues, study subjects, …)
    background: list[_Mention]
    subject_study: bool  # study_subject_gate
    #: the generic-cell scan of the product texts, when summary_mentions ran it
    generic_hits: list[tuple[Segment, Hit]] | None
    cell_types: set[str]  # collect_cell_types … drop_catch_all_types
    group: str  # label_indication
    areas: list[str]  # label_indication
    #: segments of a catch-all name dropped for a specific product (drop_catch_all_types)
    catchall: list[Segment]
    #: segments naming the product, in order (cell_type_evidence)
    product_segs: list[Segment]
    #: their ids (segments are distinct objects: identity is cheaper than the
    #: dataclass's field-by-field ``==`` that ``seg in product_segs`` would call)
    product_ids: set[int]
    msc_source: list[str]  # label_msc_source
    origin: str  # label_origin
    forms: set[str]  # label_product_form
    targets: list[str]  # label_descriptors
    doses: list[str]
    route: list[str]
    combinations: list[str]
    manufacturing: list[str]

    # (written out: a dataclass's generated __init__ is Python code even when mypyc
    # compiles this module, see Segment)
    def __init__(
        self, trial: TrialText, primary: list[Segment], summaries: list[Segment], masked: _Masks
    ) -> None:
        self.trial = trial
        self.primary = primary
        self.summaries = summaries
        self.masked = masked
        self.evidence = []
        self.found = []
        self.background = []
        self.subject_study = False
        self.generic_hits = None
        self.cell_types = set()
        self.group = ""
        self.areas = []
        self.catchall = []
        self.product_segs = []
        self.product_ids = set()
        self.msc_source = []
        self.origin = ""
        self.forms = set()
        self.targets = []
        self.doses = []
        self.route = []
        self.combinations = []
        self.manufacturing = []


class Classifier:
    """Applies a :class:`Taxonomy` to :class:`TrialText`."""

    def __init__(self, taxonomy: Taxonomy | None = None) -> None:
        self.tax = taxonomy or default_taxonomy()
        #: _is_background's answers for the trial being classified, by (text, start):
        #: the hits of several fields start at the same places (cleared per trial)
        self._background: dict[tuple[str, int], bool] = {}

    # -- helpers ---------------------------------------------------------
    def _is_background(self, text: str, start: int) -> bool:
        got = self._background.get((text, start))
        if got is None:
            got = self._background[(text, start)] = _is_background(self.tax, text, start)
        return got

    def _cell_mentions(
        self, segs: Iterable[Segment], masked: _Masks
    ) -> tuple[list[_Mention], list[_Mention]]:
        tax = self.tax
        found: list[_Mention] = []
        background: list[_Mention] = []
        for seg in segs:
            prod_hits: list[Hit] | None = None
            cell_hits: list[Hit] | None = None
            if id(seg) not in masked.done:
                prod_hits = list(tax.products.hits(seg.text))
                cell_hits = list(tax.cell_type.hits(seg.text))
                if not prod_hits and not cell_hits:
                    masked.lazy.add(id(seg))
                    continue
            text = masked.force(seg)
            if text != seg.text or prod_hits is None or cell_hits is None:
                prod_hits = list(tax.products.hits(text))
                cell_hits = list(tax.cell_type.hits(text))
            spans: list[tuple[int, int]] = []
            seg_found: list[_Mention] = []
            same = text is seg.text  # (else a hit's text is the masked one)
            for h in prod_hits:
                m = _Mention(
                    seg,
                    h if same else new_hit(h.entry, h.start, h.end, seg.text[h.start : h.end]),
                    dict(h.entry.labels),
                )
                (background if self._is_background(text, h.start) else seg_found).append(m)
                spans.append((h.start, h.end))
            for h in cell_hits:
                # spans are ordered and disjoint: only the last one starting before h.end can overlap
                j = bisect_left(spans, (h.end,)) - 1
                if j >= 0 and spans[j][1] > h.start:
                    continue  # a named product decides for its own span
                m = _Mention(
                    seg,
                    h if same else new_hit(h.entry, h.start, h.end, seg.text[h.start : h.end]),
                    dict(h.entry.labels),
                )
                (background if self._is_background(text, h.start) else seg_found).append(m)
            if seg_found and background and background[-1].seg is seg:
                seg_found = self._joined_to_background(text, seg_found, background)
            if seg_found and tax.engineering is not None:
                seg_found = self._place_receptors(seg, text, seg_found, spans)
            found.extend(seg_found)
        return _drop_sources(found), background

    @staticmethod
    def _joined_to_background(
        text: str, seg_found: list[_Mention], background: list[_Mention]
    ) -> list[_Mention]:
        """Move to ``background`` the mentions of one segment that an abbreviation's
        parenthesis or a conjunction joins to a background mention just before them
        (TAXONOMY.md "Which product counts": "enrolled after chimeric antigen
        receptor T-cell therapy (CAR-T)" names one background product twice)."""
        seg = seg_found[0].seg
        ends = sorted(m.hit.end for m in background if m.seg is seg)
        moved: set[int] = set()
        for m in sorted(seg_found, key=_mention_start):
            j = bisect_right(ends, m.hit.start) - 1
            if j >= 0:
                gap = text[ends[j] : m.hit.start]
                if len(gap) <= 40 and _JOINED_TO_PREVIOUS.fullmatch(gap):
                    background.append(m)
                    insort(ends, m.hit.end)
                    moved.add(id(m))
        # (the others keep their order: it is the order of their evidence)
        return [m for m in seg_found if id(m) not in moved] if moved else seg_found

    def _place_receptors(
        self,
        seg: Segment,
        text: str,
        mentions: list[_Mention],
        product_spans: list[tuple[int, int]],
    ) -> list[_Mention]:
        """The engineering model: a receptor (CAR, TCR, TCR-like CAR) placed on a base
        cell names one product, whose cell types the taxonomy maps (CAR on NK =
        car_nk, CAR on virus-specific T / NKT / γδ T = car_t, CAR-DC = dc...). The
        placed product replaces the cell-type matches it overlaps."""
        eng = self.tax.engineering
        assert eng is not None
        recs = eng.receptors.hits(text)
        if not recs:
            return mentions
        bases = [
            b
            for b in eng.bases.hits(text)
            if not any(r.start < b.end and b.start < r.end for r in recs)
        ]
        out = list(mentions)
        for r in recs:
            if self._is_background(text, r.start):
                continue
            base = r.entry.options.get("base")
            s0, s1 = r.start, r.end
            if base is None:
                best: tuple[int, Hit] | None = None
                for b in bases:
                    gap = text[r.end : b.start] if b.start >= r.end else text[b.end : r.start]
                    if len(gap) > eng.window or _SENTENCE_BREAK.search(gap):
                        continue
                    if best is None or len(gap) < best[0]:
                        best = (len(gap), b)
                if best is None:
                    continue
                b = best[1]
                base = b.entry.value
                s0, s1 = min(r.start, b.start), max(r.end, b.end)
            cts = eng.cell_types.get((r.entry.value, base))
            if cts is None or any(a < s1 and s0 < b_ for a, b_ in product_spans):
                continue
            over = [m for m in out if m.hit.start < s1 and s0 < m.hit.end]
            if not over or {v for m in over for v in m.values.get("cell_type", ())} == set(cts):
                continue  # nothing to correct (the cell-type match already says it)
            out = [m for m in out if not (m.hit.start < s1 and s0 < m.hit.end)]
            entry = Entry(
                f"engineering: {r.entry.value} on {base}",
                {"cell_type": cts},
                {"receptor": r.entry.value, "base": base},
            )
            out.append(_Mention(seg, new_hit(entry, s0, s1, seg.text[s0:s1]), {"cell_type": cts}))
        return out

    @staticmethod
    def _ev(out: list[Evidence], fld: str, value: str, seg: Segment, h: Hit) -> None:
        out.append(new_evidence(fld, value, seg.source, seg.text[h.start : h.end], h.start, h.end))

    def _scan(
        self,
        fld: CompiledField,
        segs: Iterable[Segment],
        masked: _Masks | None = None,
        skip_background: bool = True,
        alone: bool = False,
    ) -> list[tuple[Segment, Hit]]:
        out: list[tuple[Segment, Hit]] = []
        for seg in segs:
            text: str
            if masked is None or id(seg) not in masked.lazy:
                text = masked.done.get(id(seg), seg.text) if masked is not None else seg.text
                hits = fld.hits(text, alone=alone)
            else:  # as masked.text(), without scanning the raw text twice
                hits = fld.hits(seg.text, alone=alone)
                if not hits:
                    continue
                text = masked.force(seg)
                if text is not seg.text:
                    hits = fld.hits(text, alone=alone)
            same = text is seg.text  # (else the hit's text is the masked one)
            for h in hits:
                if skip_background and self._is_background(text, h.start):
                    continue
                out.append(
                    (
                        seg,
                        h if same else new_hit(h.entry, h.start, h.end, seg.text[h.start : h.end]),
                    )
                )
        return out

    # -- main ------------------------------------------------------------
    def classify(self, trial: TrialText) -> TrialLabels:
        """Label one trial: a pure function of ``trial`` and the taxonomy.

        The steps below run in this order on one :class:`TrialContext`; each
        says which rule of TAXONOMY.md (the labelling guide) it implements."""
        self._background.clear()
        ctx = self.context(trial)
        # which cells are the investigational product
        self.find_mentions(ctx)
        self.study_subject_gate(ctx)
        self.summary_mentions(ctx)
        self.generic_mentions(ctx)
        self.in_vivo_car(ctx)
        self.collect_cell_types(ctx)
        # the indication (also for trials that turn out not to be cell therapy)
        self.label_indication(ctx)
        # one cell type per product
        self.car_word_on_other_cells(ctx)
        self.drop_catch_all_types(ctx)
        if ctx.cell_types:
            # the product's fields
            self.cell_type_evidence(ctx)
            self.label_msc_source(ctx)
            self.label_origin(ctx)
            self.label_product_form(ctx)
            self.label_descriptors(ctx)
        return self.labels(ctx)

    def context(self, trial: TrialText) -> TrialContext:
        """A fresh context: the product texts (TAXONOMY.md "label the
        investigational product: what the experimental arm receives" — titles,
        experimental interventions and arms; comparators, eligibility and outcomes
        are never read) and the summaries and keywords, read only as a fallback."""
        segs = trial.segments
        return TrialContext(
            trial,
            [s for s in segs if s.role in _PRIMARY_ROLES],
            [s for s in segs if s.role == SUMMARY or s.role == KEYWORD],
            _Masks(self.tax.exclusions),
        )

    def labels(self, ctx: TrialContext) -> TrialLabels:
        """The labels of a context the steps have run on: ``is_cell_therapy`` is yes
        when a cell type is left (TAXONOMY.md fields: ``cell_type`` empty when no;
        ``indication_group`` is set either way)."""
        tax, trial = self.tax, ctx.trial
        if not ctx.cell_types:
            return TrialLabels(
                trial.trial_id,
                False,
                [],
                [],
                "",
                [],
                ctx.group,
                ctx.areas,
                evidence=ctx.evidence,
                taxonomy_version=tax.version,
                input_hash=trial.digest(),
            )
        return TrialLabels(
            trial.trial_id,
            True,
            sorted(ctx.cell_types),
            ctx.msc_source,
            ctx.origin,
            sorted(ctx.forms),
            ctx.group,
            sorted(ctx.areas),
            ctx.targets,
            ctx.doses,
            ctx.route,
            ctx.combinations,
            ctx.manufacturing,
            ctx.evidence,
            taxonomy_version=tax.version,
            input_hash=trial.digest(),
        )

    # -- steps: which cells are the investigational product -------------
    def find_mentions(self, ctx: TrialContext) -> None:
        """Cell-type and product-name mentions in the product texts (sets ``found``,
        ``background``). TAXONOMY.md "Which product counts": a mention after a
        background cue in its clause ("after autologous stem cell transplant",
        "previously treated with CAR-T") is background; product code and brand
        names count; a CAR placed on another cell names one product (the
        engineering model). An ``hsc`` mention (``primary_only``) counts only from
        titles and non-procedure interventions: an HSCT listed as a procedure is
        the background standard of care."""
        tax = self.tax
        found, ctx.background = self._cell_mentions(ctx.primary, ctx.masked)
        ctx.found = [
            m
            for m in found
            if not (
                tax.cell_type_option(m.hit.entry.value, "primary_only")
                and "cell_type" in m.values
                and m.values["cell_type"] == (m.hit.entry.value,)
                and m.seg.procedure
            )
        ]

    def study_subject_gate(self, ctx: TrialContext) -> None:
        """Cells that are the *subject* of a study — imaging, exercise,
        questionnaires, supportive care of CAR-T or HSCT recipients — named in
        titles but given in no intervention or arm are background, not the product
        (TAXONOMY.md "Which product counts"; sets ``subject_study``)."""
        cues = self.tax.study_subject_cues
        found = ctx.found
        if (
            cues is not None
            and (bool(found) or bool(ctx.summaries))
            and not any(m.seg.role in (INTERVENTION, ARM) for m in found)
            and _subject_study(cues, ctx.primary)
            and not self._cells_given(ctx)
        ):
            ctx.subject_study = True
            ctx.background.extend(found)
            ctx.found = []

    def _cells_given(self, ctx: TrialContext) -> bool:
        """Whether an intervention or arm gives cells generically ("stem cell
        transplantation"): then the cells named in the title are what the study gives,
        even when it measures them by imaging."""
        fallback = self.tax.generic_fallback
        return any(
            s.role in (INTERVENTION, ARM) and fallback.search(ctx.masked.text(s, fallback) or "")
            for s in ctx.primary
        )

    def summary_mentions(self, ctx: TrialContext) -> None:
        """When the product texts name no cells, the summaries say what the product
        is — but only when the product texts name it generically ("stem cell
        product", a code name of an intervention, an EV/secretome word): then the
        summaries' cell mentions count. A code name in a title alone ("S103 in
        myasthenia gravis") lets only the summary sentences naming it count
        (TAXONOMY.md: code names count when the product is known). Cells the
        product texts name only as background ("NKTR-255 Following CAR-T
        Therapy") make a code name the name of a drug given after them."""
        if ctx.found or not ctx.summaries or ctx.subject_study:
            return
        tax, primary, masked = self.tax, ctx.primary, ctx.masked
        # cells the product texts name only as background ("after CAR-T") are the
        # trial's setting: a code name there names a drug given in it
        setting = bool(ctx.background)
        cue = any(
            self._generic_cue(s, masked, ctx.background)
            or (not setting and s.role == INTERVENTION and _CODE_NAME.search(s.text))
            for s in primary
        )
        codes = (
            []
            if cue or setting
            else [
                m.group()
                for s in primary
                if s.role == TITLE
                for m in _CODE_NAME.finditer(s.text)
                if not _NOT_A_CODE.fullmatch(m.group())
            ]
        )
        ctx.generic_hits = self._scan(tax.generic_fallback, primary, masked)
        # always scanned: a scan masks the segments it could match (see _Masks)
        deriv_primary = self._scan(tax.product_form, primary, masked)
        if cue or ctx.generic_hits or deriv_primary:
            sfound, _ = self._cell_mentions(ctx.summaries, masked)
            ctx.found = [
                m for m in sfound if not tax.cell_type_option(m.hit.entry.value, "primary_only")
            ]
        elif codes:
            sfound, _ = self._cell_mentions(ctx.summaries, masked)
            ctx.found = [
                m
                for m in sfound
                if not tax.cell_type_option(m.hit.entry.value, "primary_only")
                and _names_code(m.seg.text, m.hit.start, codes)
            ]

    def _generic_cue(self, seg: Segment, masked: _Masks, background: list[_Mention]) -> bool:
        """Whether ``seg`` names cells generically ("stem cell product", "cell
        therapy") outside a background clause: "maintenance post CAR-T cell
        therapy" or "after autologous stem cell transplant" says what the
        patients had, not what the product is; nor does the word of a
        background mention ("After ... Chimeric Antigen Receptor T-cell
        Therapy": the "cell therapy" of background CAR-T cells)."""
        cues = self.tax.generic_cell_cues
        text = masked.text(seg, cues)
        if text is None:
            return False
        spans = [(m.hit.start, m.hit.end) for m in background if m.seg is seg]
        return any(
            not self._is_background(text, h.start)
            and not any(
                a <= h.start and _ADJOINS.fullmatch(text, b, max(b, h.start)) for a, b in spans
            )
            for h in cues.hits(text)
        )

    def generic_mentions(self, ctx: TrialContext) -> None:
        """Still no named cell type: a generic cell-therapy phrase in the product
        texts ("stem cell therapy") is the taxonomy's fallback cell type
        (TAXONOMY.md ``other_stem``: other stem/progenitor cells)."""
        if ctx.found:
            return
        tax = self.tax
        # the same scan as summary_mentions' when it ran (masking is a function of the text)
        generic_hits = ctx.generic_hits
        if generic_hits is None:
            generic_hits = self._scan(tax.generic_fallback, ctx.primary, ctx.masked)
        for seg, h in generic_hits:
            ctx.found.append(_Mention(seg, h, {"cell_type": (tax.generic_fallback_cell_type,)}))

    def in_vivo_car(self, ctx: TrialContext) -> None:
        """TAXONOMY.md "In vivo CAR": a vector or lipid nanoparticle that makes CAR
        cells inside the patient gives no cells — gene therapy, not cell therapy.
        A cue in a title or intervention (or, failing that, a summary) removes the
        CAR cell types from the mentions (evidence field ``in_vivo_car``)."""
        ivc = self.tax.in_vivo_car
        found = ctx.found
        if (
            ivc is None
            or not found
            or not any(v in ivc.cell_types for m in found for v in m.values.get("cell_type", ()))
        ):
            return
        ivc_cue = next(
            (
                (s, h)
                for s in ctx.primary
                if s.role in (TITLE, INTERVENTION)
                for h in ivc.cues.hits(s.text)
                if not self._is_background(s.text, h.start)
            ),
            None,
        )
        if ivc_cue is None:
            ivc_cue = next(
                (
                    (s, h)
                    for s in ctx.summaries
                    if s.role == SUMMARY
                    for h in ivc.summary_cues.hits(s.text, alone=True)
                ),
                None,
            )
        if ivc_cue is None:
            return
        self._ev(ctx.evidence, "in_vivo_car", "no cells given", ivc_cue[0], ivc_cue[1])
        kept = []
        for m in found:
            rest = tuple(v for v in m.values.get("cell_type", ()) if v not in ivc.cell_types)
            if rest:
                kept.append(_Mention(m.seg, m.hit, {**m.values, "cell_type": rest}))
            else:
                ctx.background.append(m)
        ctx.found = kept

    @staticmethod
    def collect_cell_types(ctx: TrialContext) -> None:
        """The cell types the product mentions name (sets ``cell_types``)."""
        cell_types: set[str] = set()
        for m in ctx.found:
            for v in m.values.get("cell_type", ()):
                cell_types.add(v)
        ctx.cell_types = cell_types

    # -- step: indication --------------------------------------------------
    def label_indication(self, ctx: TrialContext) -> None:
        """``indication_group`` and ``therapeutic_area`` (TAXONOMY.md
        "indication_group"; the COVID-19 conventions are rules of the taxonomy
        data): the best indication rule (see :meth:`_best_indication`); a trial
        whose conditions name blood and solid cancers targets both. Nothing
        found: ``oncology``/``solid_tumor`` for cell types tested almost only in
        cancer, else the taxonomy's default ("choose the closest and keep going;
        never leave indication_group empty")."""
        tax = self.tax
        best = self._best_indication(ctx.trial.segments, ctx.cell_types)
        if best is not None:
            seg, h = best
            group = h.entry.labels["indication_group"][0]
            areas = list(h.entry.labels["therapeutic_area"])
            self._ev(ctx.evidence, "indication_group", group, seg, h)
            for a in areas:
                self._ev(ctx.evidence, "therapeutic_area", a, seg, h)
            if group == "oncology" and seg.role == CONDITION:
                self._more_cancer_areas(ctx, areas)
        elif ctx.cell_types & tax.oncology_cell_types:
            group, areas = "oncology", ["solid_tumor"]
        else:
            group, areas = tax.default_indication[0], [tax.default_indication[1]]
        ctx.group, ctx.areas = group, areas

    def _best_indication(
        self, segs: list[Segment], cell_types: set[str]
    ) -> tuple[Segment, Hit] | None:
        """The indication hit that decides: specific rules before generic words,
        priority rules first, conditions/MeSH before titles before keywords before
        summaries, then the rule's rank. Generic words in a summary are too weak."""
        best: tuple[tuple[int, int, int, int], Segment, Hit] | None = None
        settled: int | None = (
            None  # tier where a specific rule was found: later tiers can only win by priority
        )
        for seg in sorted(
            (x for x in segs if x.role in _IND_TIER), key=lambda x: _IND_TIER[x.role]
        ):
            tier = _IND_TIER[seg.role]
            if settled is not None and tier > settled and best is not None and not best[0][1]:
                break  # a priority rule already won
            if settled is not None and tier > settled and seg.role == SUMMARY:
                break  # a summary's passing mention ("without increasing GVHD") cannot outrank a condition
            text = seg.text[:600] if seg.role == SUMMARY else seg.text
            # (no other field reads conditions, MeSH terms, keywords or a summary's start
            # before this step: read alone, their passes cost the indications' keys only)
            alone = seg.role != TITLE
            ind_hits = (
                self.tax.indications_priority.hits(text, alone=alone)
                if settled is not None and tier > settled
                else self._indication_hits(text, cell_types, alone)
            )
            for h in ind_hits:
                key = (
                    int(bool(h.entry.options.get("generic"))),
                    int(not h.entry.options.get("priority")),
                    tier,
                    int(h.entry.options["rank"]),
                )
                if best is None or key < best[0]:
                    best = (key, seg, h)
            if settled is None and best is not None and not best[0][0]:
                settled = tier
        if best is None or (best[0][2] == _IND_TIER[SUMMARY] and best[0][0]):
            return None  # generic words in a summary are too weak
        return best[1], best[2]

    def _more_cancer_areas(self, ctx: TrialContext, areas: list[str]) -> None:
        """Conditions naming blood cancers and solid cancers: the trial targets
        both (extends ``areas``; vague words such as "neoplasms" add nothing)."""
        for cseg in ctx.trial.segments:
            if cseg.role != CONDITION:
                continue
            for ch in self._indication_hits(cseg.text, ctx.cell_types, True):
                extra = ch.entry.labels["therapeutic_area"]
                if (
                    ch.entry.labels["indication_group"][0] == "oncology"
                    and not ch.entry.options.get("generic")
                    and not set(extra) <= set(areas)
                    and not _VAGUE_CANCER.fullmatch(ch.text)
                ):
                    areas.extend(a for a in extra if a not in areas)
                    for a in extra:
                        self._ev(ctx.evidence, "therapeutic_area", a, cseg, ch)

    # -- steps: one cell type per product ----------------------------------
    @staticmethod
    def car_word_on_other_cells(ctx: TrialContext) -> None:
        """A bare CAR word ("CD19-CAR", "chimeric antigen receptor") names no cell:
        when the trial's CAR product is another cell (CAR-NK, CAR-M, CAR-DC) it is
        that product (TAXONOMY.md: CAR-NK is ``car_nk``, CAR on macrophages or
        dendritic cells is ``macrophage`` or ``dc``)."""
        if "car_t" not in ctx.cell_types or not ctx.cell_types & _CAR_ON_OTHER_CELLS:
            return
        car_t_ms = [m for m in ctx.found if m.values.get("cell_type", ()) == ("car_t",)]
        if car_t_ms and not any(_NAMES_T_CELLS.search(m.hit.text) for m in car_t_ms):
            ctx.cell_types.discard("car_t")
            ctx.found = [m for m in ctx.found if m not in car_t_ms]
            ctx.background.extend(car_t_ms)

    def drop_catch_all_types(self, ctx: TrialContext) -> None:
        """Catch-all and background-prone cell types give way to a more specific
        product: a type with ``dropped_with_cell_types`` goes when one of those is
        also found (its segments still describe the product: ``catchall``); one
        with ``dropped_with_other_cells_in`` goes in those therapeutic areas unless
        a named product carries it (TAXONOMY.md: an HSCT background of a CAR-T
        trial is not an HSC trial)."""
        cell_types = ctx.cell_types
        if len(cell_types) <= 1:
            return
        tax = self.tax
        for v in list(cell_types):
            with_types = tax.cell_type_option(v, "dropped_with_cell_types")
            if with_types and cell_types & with_types:
                cell_types.discard(v)
                # a catch-all name of the same product ("therapeutic autologous lymphocytes"): its words still describe it
                ctx.catchall.extend(
                    m.seg for m in ctx.found if m.values.get("cell_type", ()) == (v,)
                )
                ctx.found = _without_type(ctx.found, v)
                continue
            drop_in = tax.cell_type_option(v, "dropped_with_other_cells_in")
            named = any(
                v in m.values.get("cell_type", ()) and len(m.values["cell_type"]) > 1
                for m in ctx.found
            )
            # a named product keeps all its cell types
            if drop_in and set(ctx.areas) & drop_in and not named:
                cell_types.discard(v)
                ctx.background.extend(m for m in ctx.found if m.values.get("cell_type", ()) == (v,))
                ctx.found = _without_type(ctx.found, v)

    # -- steps: the product's fields ----------------------------------------
    def cell_type_evidence(self, ctx: TrialContext) -> None:
        """Evidence for each ``cell_type`` left, and the segments that name the
        product (``product_segs``, in order): the other fields read those first."""
        evidence, cell_types = ctx.evidence, ctx.cell_types
        for m in ctx.found:
            for v in m.values.get("cell_type", ()):
                if v in cell_types:
                    self._ev(evidence, "cell_type", v, m.seg, m.hit)
        seen_ids = ctx.product_ids
        for m in ctx.found:
            if id(m.seg) not in seen_ids:
                seen_ids.add(id(m.seg))
                ctx.product_segs.append(m.seg)

    def label_msc_source(self, ctx: TrialContext) -> None:
        """``msc_source`` (TAXONOMY.md: only when ``cell_type`` includes ``msc``;
        Wharton's jelly is umbilical cord): a named product's known source, else
        the source words in the segments naming the MSC — not a tissue the cells
        are given *for* ("MSC for dental pulp regeneration") — else
        ``unspecified``."""
        if "msc" not in ctx.cell_types:
            return
        tax, masked, evidence = self.tax, ctx.masked, ctx.evidence
        src: set[str] = set()
        for m in ctx.found:
            for v in m.values.get("msc_source", ()):
                src.add(v)
                self._ev(evidence, "msc_source", v, m.seg, m.hit)
        if not src:
            seen_src: set[int] = set()
            for seg in (m.seg for m in ctx.found if "msc" in m.values.get("cell_type", ())):
                if id(seg) in seen_src:
                    continue
                seen_src.add(id(seg))
                for s2, h in self._scan(tax.msc_source, [seg], masked):
                    text2 = masked.peek(s2)
                    if tax.msc_source_target_cue.search(text2[max(0, h.start - 40) : h.start]):
                        continue
                    src.add(h.entry.value)
                    self._ev(evidence, "msc_source", h.entry.value, s2, h)
        ctx.msc_source = sorted(src) if src else ["unspecified"]

    def label_origin(self, ctx: TrialContext) -> None:
        """``origin`` (TAXONOMY.md: "stated words win"): origin words in the product
        texts (:meth:`_stated_origin`), else a named product's known origin
        ("product knowledge counts for origin too"), else origin words in summary
        sentences that name cells; autologous and allogeneic together are
        ``both``. Nothing stated: implied by the MSC source or the cell type
        (:meth:`_implied_origin`)."""
        stated = self._stated_origin(ctx)
        if not stated:  # a named product's known origin, when the record states none
            for m in ctx.found:
                for v in m.values.get("origin", ()):
                    stated.add(v)
                    self._ev(ctx.evidence, "origin", v, m.seg, m.hit)
        if not stated and ctx.summaries:
            self._summary_origin(ctx, stated)
        if "both" in stated or {"autologous", "allogeneic"} <= stated:
            ctx.origin = "both"
        elif stated:
            ctx.origin = next(iter(stated))
        else:
            ctx.origin = self._implied_origin(ctx)

    def _stated_origin(self, ctx: TrialContext) -> set[str]:
        """Origin words in the segments naming the product (and a dropped
        catch-all name of it), unless the word belongs to other cells named beside
        it ("autologous HSCT followed by CAR-T": the word is about the HSCT)."""
        stated: set[str] = set()
        product_segs = ctx.product_segs
        origin_segs = product_segs + [
            s for s in dict.fromkeys(ctx.catchall) if id(s) not in ctx.product_ids
        ]
        for seg, h in self._scan(self.tax.origin, origin_segs, ctx.masked):
            if _describes_other_cells(seg, h, ctx.found, ctx.background):
                continue
            stated.add(h.entry.value)
            self._ev(ctx.evidence, "origin", h.entry.value, seg, h)
        return stated

    def _summary_origin(self, ctx: TrialContext, stated: set[str]) -> None:
        """Origin words in the summary sentences that also name cells or a product
        (adds to ``stated``; background mentions skipped)."""
        tax = self.tax
        origin = tax.origin
        for seg in ctx.summaries:
            text = ctx.masked.force(seg)
            for sm in _SENTENCE.finditer(text):
                if not origin.may_hit(text, sm.start(), sm.end()):
                    continue  # (a sentence starts after a non-word character or at 0)
                sent = sm.group()
                ohits = list(tax.origin.hits(sent, alone=True))
                if not ohits or not (tax.cell_type.search(sent) or tax.products.search(sent)):
                    continue
                for h in ohits:
                    if self._is_background(sent, h.start):
                        continue
                    s0, s1 = sm.start() + h.start, sm.start() + h.end
                    stated.add(h.entry.value)
                    ctx.evidence.append(
                        Evidence("origin", h.entry.value, seg.source, seg.text[s0:s1], s0, s1)
                    )

    def _implied_origin(self, ctx: TrialContext) -> str:
        """TAXONOMY.md origin: cells from umbilical cord, cord blood, placenta or
        amnion are ``allogeneic`` (any source word in the product texts counts
        here, also when ``msc`` is not the cell type), and some cell types imply
        an origin (ESC-derived); one implied origin wins, else ``unspecified``.
        Evidence is the first cell-type or source evidence implying it."""
        tax = self.tax
        by_source, by_cell_type = tax.implied_origin_by_source, tax.implied_origin_by_cell_type
        srcs = set(ctx.msc_source)
        if not srcs - {"unspecified"}:
            for s2, h in self._scan(tax.msc_source, ctx.product_segs, ctx.masked):
                if by_source.get(h.entry.value, "unspecified") != "unspecified":
                    srcs.add(h.entry.value)
                    ctx.evidence.append(
                        Evidence(
                            "origin", by_source[h.entry.value], s2.source, h.text, h.start, h.end
                        )
                    )
        implied = {by_source.get(s, "") for s in srcs} - {"", "unspecified"}
        implied |= {by_cell_type.get(c, "") for c in ctx.cell_types} - {"", "unspecified"}
        origin = next(iter(implied)) if len(implied) == 1 else "unspecified"
        if origin != "unspecified":
            for e in list(ctx.evidence):
                if e.field in ("msc_source", "cell_type") and (
                    by_source.get(e.value) == origin or by_cell_type.get(e.value) == origin
                ):
                    ctx.evidence.append(
                        Evidence("origin", origin, e.source_field, e.text, e.start, e.end)
                    )
                    break
        return origin

    def label_product_form(self, ctx: TrialContext) -> None:
        """``product_form`` (TAXONOMY.md product_form): a named product's known form;
        EV and secretome words in the product texts; ``composite`` and
        ``gene_modified`` words in the segments naming the product (a weak
        gene-modified word adds nothing to a type engineered by definition:
        "a plain CAR is not enough"); engineering edits beyond the receptor
        (:meth:`_engineering_edits`). ``cells`` when some cell mention is not just
        the source of an EV/secretome product ("MSC-derived exosomes") and no
        ``composite``/``gene_modified`` was found ("write them alone, not with
        cells"), or when nothing else was."""
        forms, evidence = ctx.forms, ctx.evidence
        for m in ctx.found:
            for v in m.values.get("product_form", ()):
                forms.add(v)
                self._ev(evidence, "product_form", v, m.seg, m.hit)
        by_seg = self._form_words(ctx)
        self._engineering_edits(ctx)
        for m in ctx.found:
            opts = m.hit.entry.options
            if "receptor" in opts:
                self._ev(
                    evidence, "engineering", f"{opts['receptor']} on {opts['base']}", m.seg, m.hit
                )
        plain_cells = False
        for m in ctx.found:
            if m.values.get("product_form"):
                continue
            derivs = by_seg.get(id(m.seg), [])
            if not derivs or not _derivative_attached(ctx.masked.peek(m.seg), m.hit, derivs):
                plain_cells = True
        if plain_cells and not forms & {"composite", "gene_modified"}:
            forms.add("cells")
        if not forms:
            forms.add("cells")

    def _form_words(self, ctx: TrialContext) -> dict[int, list[Hit]]:
        """Product-form words in the product texts (adds to ``forms``); returns the
        EV/secretome hits by segment id, for telling "cells" from "made from cells"."""
        tax, forms, evidence, product_segs = self.tax, ctx.forms, ctx.evidence, ctx.product_segs
        deriv_segs = product_segs + [
            s for s in ctx.primary if id(s) not in ctx.product_ids and s.role != KEYWORD
        ]
        by_seg: dict[int, list[Hit]] = {}
        for seg, h in self._scan(tax.product_form, deriv_segs, ctx.masked):
            v = h.entry.value
            if v in ("extracellular_vesicles", "secretome"):
                by_seg.setdefault(id(seg), []).append(h)
                forms.add(v)
                self._ev(evidence, "product_form", v, seg, h)
            elif v == "composite" and id(seg) in ctx.product_ids:
                forms.add(v)
                self._ev(evidence, "product_form", v, seg, h)
            elif v == "gene_modified" and id(seg) in ctx.product_ids:
                weak = tax.product_form_weak.regex.fullmatch(h.text) is not None
                if weak and ctx.cell_types & tax.engineered_by_definition:
                    continue
                forms.add(v)
                self._ev(evidence, "product_form", v, seg, h)
        return by_seg

    def _engineering_edits(self, ctx: TrialContext) -> None:
        """TAXONOMY.md gene_modified: "cells engineered beyond CAR/TCR" — knock-outs,
        armour, extra receptors, switches, mRNA — from the taxonomy's engineering
        edits; a weak edit word adds nothing to a type engineered by definition."""
        eng = self.tax.engineering
        if eng is None:
            return
        by_definition = bool(ctx.cell_types & self.tax.engineered_by_definition)
        product_segs = ctx.product_segs
        edit_segs = product_segs + [
            s for s in ctx.primary if id(s) not in ctx.product_ids and s.role != KEYWORD
        ]
        for seg, h in self._scan(eng.edits, edit_segs, ctx.masked):
            if h.entry.options.get("weak") and by_definition:
                continue
            ctx.forms.add("gene_modified")
            self._ev(ctx.evidence, "product_form", "gene_modified", seg, h)
            self._ev(ctx.evidence, "engineering", f"edit:{h.entry.value}", seg, h)

    def label_descriptors(self, ctx: TrialContext) -> None:
        """The descriptors beyond TAXONOMY.md's fields: targets (of CAR/TCR/γδ
        products: a named product's, else antigen words in the product texts or,
        failing that, the summaries), routes and doses (product texts and
        experimental interventions/arms), combinations (interventions, arms,
        titles) and manufacturing (the segments naming the product)."""
        tax, masked, evidence, product_segs = self.tax, ctx.masked, ctx.evidence, ctx.product_segs
        primary = ctx.primary
        desc_segs = product_segs + [
            s for s in primary if id(s) not in ctx.product_ids and s.role in (INTERVENTION, ARM)
        ]
        targets = ctx.targets
        for m in ctx.found:
            for v in m.values.get("targets", ()):
                if v not in targets:
                    targets.append(v)
                self._ev(evidence, "targets", v, m.seg, m.hit)
        if ctx.cell_types & _IMMUNE_TARGETED:
            hits = self._scan(tax.targets, list(primary), masked, skip_background=False)
            if not hits and ctx.summaries:
                hits = self._scan(
                    tax.targets, ctx.summaries, masked, skip_background=False, alone=True
                )
            for seg, h in hits:
                if h.entry.value not in targets:
                    targets.append(h.entry.value)
                self._ev(evidence, "targets", h.entry.value, seg, h)
        ctx.route = self._values(tax.routes, desc_segs, masked, "route", evidence)
        ctx.combinations = self._values(
            tax.combinations,
            [s for s in primary if s.role in (INTERVENTION, ARM, TITLE)],
            masked,
            "combinations",
            evidence,
        )
        ctx.manufacturing = self._values(
            tax.manufacturing, product_segs, masked, "manufacturing", evidence
        )
        for seg, h in self._scan(tax.doses, desc_segs, masked, skip_background=False):
            d = _WS.sub(" ", h.text.strip())
            if d not in ctx.doses:
                ctx.doses.append(d)
            self._ev(evidence, "dose", d, seg, h)

    def _indication_hits(self, text: str, cell_types: set[str], alone: bool = False) -> list[Hit]:
        out: list[Hit] = []
        rescan = False
        for h in self.tax.indications.hits(text, alone=alone):
            allowed = h.entry.options.get("cell_types")
            if allowed is not None and not (cell_types & allowed):
                rescan = True
                continue
            out.append(h)
        if rescan:
            out.extend(
                h
                for h in self.tax.indications_unlimited.hits(text, alone=alone)
                if "cell_types" not in h.entry.options
            )
        return out

    def _values(
        self,
        fld: CompiledField,
        segs: list[Segment],
        masked: _Masks,
        name: str,
        evidence: list[Evidence],
    ) -> list[str]:
        out: list[str] = []
        for seg, h in self._scan(fld, segs, masked):
            v = h.entry.value
            if v not in out:
                out.append(v)
            self._ev(evidence, name, v, seg, h)
        return out


_DEFAULT: Classifier | None = None


def classify(
    trial: TrialText | ParsedRecord | Sequence[ParsedRecord], taxonomy: Taxonomy | None = None
) -> TrialLabels:
    """Classify one trial (a :class:`TrialText`, a record, or the records of one trial)."""
    global _DEFAULT
    if isinstance(trial, ParsedRecord):
        trial = TrialText.from_record(trial)
    elif not isinstance(trial, TrialText):
        trial = TrialText.from_records(list(trial))
    if taxonomy is not None:
        return Classifier(taxonomy).classify(trial)
    if _DEFAULT is None:
        _DEFAULT = Classifier()
    return _DEFAULT.classify(trial)


def unknown_product_names(
    texts: Iterable[TrialText], taxonomy: Taxonomy | None = None, limit_examples: int = 5
) -> list[dict[str, Any]]:
    """Intervention names of cell-therapy trials that name no known product.

    A trial counts when the classifier labels it cell therapy; an intervention
    name (not a comparator) counts when it looks like a product code (letters
    and digits, e.g. "QN-019a", "JY231 Injection"), and no product synonym,
    code name, cell-type word, combination partner (chemotherapy, antibodies...)
    or target-only word matches it. Names are grouped case-insensitively; rows
    are ``{"name", "trials", "example_ids"}``, most frequent first, so a curator
    can grow ``taxonomy/code_names.csv``."""
    clf = Classifier(taxonomy)
    tax = clf.tax
    counts: dict[str, dict[str, Any]] = {}
    for tt in texts:
        names = [s for s in tt.segments if s.role == INTERVENTION and s.source.endswith(".name")]
        if not names:
            continue
        lab = clf.classify(tt)
        if not lab.is_cell_therapy:
            continue
        seen: set[str] = set()
        for seg in names:
            name = _WS.sub(" ", seg.text.strip())
            key = name.lower()
            if (
                key in seen
                or (code := _CODE_NAME.search(name)) is None
                or _NOT_A_CODE.fullmatch(code.group())
            ):
                continue
            if (
                tax.products.search(name)
                or tax.cell_type.search(name)
                or tax.combinations.search(name)
                or tax.exclusions.search(name)
            ):
                continue
            seen.add(key)
            row = counts.setdefault(key, {"name": name, "trials": 0, "example_ids": []})
            row["trials"] += 1
            if len(row["example_ids"]) < limit_examples:
                row["example_ids"].append(tt.trial_id)
    return sorted(counts.values(), key=lambda r: (-r["trials"], r["name"].lower()))
