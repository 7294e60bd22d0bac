"""Pure parsers of ``iptables-save`` / ``ip6tables-save`` dumps (a part of :mod:`runbook.facts`).

Three views of one dump, from cheapest to fullest:

- :func:`parse_iptables_chains`: chain declarations by prefix, without reading the
  rules (what a fact table needs; a dump in iptables-save's own layout is counted from
  its declaration blocks);
- :func:`parse_iptables_save`: chains, rules and jumps by prefix, and flannel's
  FORWARD rules (what a cleanup checks before and after);
- :func:`filter_iptables`: the dump without the chains of some prefixes (and the
  rules jumping to them), byte for byte otherwise, for ``iptables-restore``.

Every name here is re-exported by :mod:`runbook.facts`, where callers import them.
Golden files: ``tests/fixtures/facts/parse_iptables_save/`` and ``.../parse_iptables_chains/``.

Example:
    >>> dump = "*nat\\n:KUBE-SERVICES - [0:0]\\n:PREROUTING ACCEPT [0:0]\\nCOMMIT\\n"
    >>> parse_iptables_chains(dump).chains["KUBE-SERVICES"]
    1
"""
from __future__ import annotations

import re
import shlex
from collections import Counter
from dataclasses import dataclass, field
from typing import Iterable

#: Chain prefixes the runbook reports on (and may clean up). Cilium names its chains
#: with an underscore (``CILIUM_FORWARD``) and flannel with a dash (``FLANNEL-FWD``):
#: a plain prefix match covers both.
DEFAULT_PREFIXES: tuple[str, ...] = (
    "KUBE-SVC", "KUBE-SEP", "KUBE-SERVICES", "KUBE-ROUTER", "FLANNEL", "CILIUM",
)

#: The comment flannel puts on its FORWARD rules (they live in the built-in FORWARD
#: chain, so a chain prefix does not catch them).
FLANNEL_FORWARD_COMMENT = "flanneld forward"


@dataclass
class IptablesSummary:
    """Counts from ``iptables-save`` (and ``ip6tables-save``), by chain prefix.

    Attributes:
        chains: prefix -> number of chain declarations whose name starts with it
            (summed over tables and families).
        rules: prefix -> number of rules appended to those chains.
        jumps: prefix -> number of rules in OTHER chains jumping (``-j``/``-g``) to them.
        flannel_forward_rules: rules carrying the ``flanneld forward`` comment.
        total_chains, total_rules: over the whole dump.
        tables: the tables seen (``filter``, ``nat`` ...), in order.
    """

    chains: dict[str, int] = field(default_factory=dict)
    rules: dict[str, int] = field(default_factory=dict)
    jumps: dict[str, int] = field(default_factory=dict)
    flannel_forward_rules: int = 0
    total_chains: int = 0
    total_rules: int = 0
    tables: list[str] = field(default_factory=list)

    def count(self, prefix: str) -> int:
        """Chains plus rules of ``prefix``: 0 means the prefix is gone."""
        return self.chains.get(prefix, 0) + self.rules.get(prefix, 0)

    def merged(self, other: "IptablesSummary") -> "IptablesSummary":
        """Sum of two summaries (IPv4 + IPv6)."""
        keys = list(dict.fromkeys([*self.chains, *other.chains]))
        return IptablesSummary(
            chains={k: self.chains.get(k, 0) + other.chains.get(k, 0) for k in keys},
            rules={k: self.rules.get(k, 0) + other.rules.get(k, 0) for k in keys},
            jumps={k: self.jumps.get(k, 0) + other.jumps.get(k, 0) for k in keys},
            flannel_forward_rules=self.flannel_forward_rules + other.flannel_forward_rules,
            total_chains=self.total_chains + other.total_chains,
            total_rules=self.total_rules + other.total_rules,
            tables=list(dict.fromkeys([*self.tables, *other.tables])),
        )


_FLAGS = {"-A": 0, "-j": 1, "-g": 1, "--jump": 1, "--goto": 1, "--comment": 2}


def _rule_words(line: str) -> list[str]:
    """The words of a rule line, as ``shlex.split`` reads them.

    iptables-save quotes with double quotes only (a comment with spaces) and escapes
    with a backslash only a quote inside one; such rare lines, single quotes and
    unbalanced quotes go to ``shlex`` (on a ValueError the line is split on spaces).
    Every other line is split with ``str.split`` and ``"`` alone, in C: a node running
    kube-proxy or Cilium has thousands of rules, nearly all with a quoted comment.
    """
    if '"' not in line:
        if "'" not in line and "\\" not in line:
            return line.split()
    elif "'" not in line and "\\" not in line:
        parts = line.split('"')
        if len(parts) % 2:          # balanced
            words: list[str] = []
            glue = False            # the next piece continues the last word
            for i, part in enumerate(parts):
                if i % 2:           # inside quotes: literal, may be empty
                    if glue:
                        words[-1] += part
                    else:
                        words.append(part)
                    glue = True
                elif part:
                    ws = part.split()
                    if ws and glue and not part[0].isspace():
                        words[-1] += ws[0]
                        del ws[0]
                    words.extend(ws)
                    glue = not part[-1].isspace()
            return words
    try:
        return shlex.split(line)
    except ValueError:  # unbalanced quote in a comment: fall back to whitespace split
        return line.split()


def rule_chain_and_target(line: str) -> tuple[str | None, str | None, str | None]:
    """(chain, jump target, comment) of an ``-A`` line (one pass over its words).

    Example:
        >>> rule_chain_and_target('-A FORWARD -s 10.42.0.0/16 -m comment --comment "flanneld forward" -j ACCEPT')
        ('FORWARD', 'ACCEPT', 'flanneld forward')
    """
    words = _rule_words(line)
    if words and words[0].startswith("[") and words[0].endswith("]"):  # iptables-save -c
        del words[0]
    found: list[str | None] = [None, None, None]
    flags = _FLAGS
    for i in range(len(words) - 1):
        slot = flags.get(words[i])
        if slot is not None and (slot or found[0] is None):
            found[slot] = words[i + 1]
    return found[0], found[1], found[2]


def _match(name: str | None, prefixes: Iterable[str]) -> str | None:
    if not name:
        return None
    for p in prefixes:
        if name.startswith(p):
            return p
    return None


def _quick_chain_and_target(line: str) -> tuple[str, str | None] | None:
    """(chain, jump target) of an ``-A`` line without reading its words, or None.

    iptables-save writes ``[counters] -A CHAIN <matches> -j TARGET <target options>``,
    with quotes only around comments and prefixes among the matches. So when the last
    `` -j ``/`` -g `` comes after the last quote, it is the jump, outside any quote:
    the rest need not be tokenised. Anything else (a tab, ``--jump``, a quote after
    the jump) returns None and the caller reads the words (:func:`rule_chain_and_target`).
    """
    head = line.split(None, 3)
    i = 1 if head and head[0][:1] == "[" and head[0][-1:] == "]" else 0
    if len(head) < i + 2 or head[i] != "-A" or "\t" in line or "--jump" in line or "--goto" in line:
        return None
    chain = head[i + 1]
    if any(q in chain for q in "\"'\\"):
        return None   # a quoted chain name (iptables-save never writes one)
    quote = max(line.rfind('"'), line.rfind("'"), line.rfind("\\"))
    jump = max(line.rfind(" -j "), line.rfind(" -g "))
    if jump < 0:
        return chain, None
    if jump < quote:
        return None
    rest = line[jump + 4:].split(None, 1)
    return (chain, rest[0]) if rest else None


def parse_iptables_save(text: str, prefixes: Iterable[str] = DEFAULT_PREFIXES) -> IptablesSummary:
    """Summarise an ``iptables-save`` dump by chain prefix.

    One pass over the lines; a rule's words are read only when quoting requires it
    (a node with kube-proxy or Cilium has thousands of rules).

    Args:
        text: the dump (IPv4 and IPv6 dumps may be concatenated).
        prefixes: the prefixes to count; the first matching prefix wins, so list the
            longer one first when two overlap.

    Example:
        >>> s = parse_iptables_save("*nat\\n:KUBE-SVC-ABC - [0:0]\\n-A KUBE-SVC-ABC -j KUBE-SEP-1\\nCOMMIT\\n")
        >>> s.chains["KUBE-SVC"], s.rules["KUBE-SVC"], s.jumps["KUBE-SEP"]
        (1, 1, 1)
    """
    prefixes = tuple(prefixes)
    s = IptablesSummary(chains={p: 0 for p in prefixes}, rules={p: 0 for p in prefixes},
                        jumps={p: 0 for p in prefixes})
    matched: dict[str | None, str | None] = {None: None}

    def match(name: str | None) -> str | None:
        try:
            return matched[name]
        except KeyError:
            p = matched[name] = _match(name, prefixes)
            return p

    tables: dict[str, None] = {}
    chains, rules, jumps = s.chains, s.rules, s.jumps
    for raw in text.splitlines():
        line = raw.strip()
        if not line:
            continue
        first = line[0]
        if first == "*":
            tables[line[1:]] = None
        elif first == ":":
            s.total_chains += 1
            words = line[1:].split(None, 1)
            p = match(words[0] if words else None)
            if p:
                chains[p] += 1
        elif line.startswith("-A") or (first == "[" and " -A " in line):
            s.total_rules += 1
            quick = None if FLANNEL_FORWARD_COMMENT in line else _quick_chain_and_target(line)
            if quick is None:
                chain, target, comment = rule_chain_and_target(line)
                if comment and FLANNEL_FORWARD_COMMENT in comment:
                    s.flannel_forward_rules += 1
            else:
                chain, target = quick
            p = match(chain)
            if p:
                rules[p] += 1
            pt = match(target)
            if pt and pt != p:
                jumps[pt] += 1
    s.tables = list(tables)
    return s


@dataclass
class IptablesChains:
    """Chain declarations of ``iptables-save`` (and ``ip6tables-save``), by prefix.

    The part of :class:`IptablesSummary` a fact table needs (how many CNI chains a node
    still has), read without looking at the rules, so it costs a fraction of a full
    summary on a node with thousands of kube-proxy or Cilium rules.

    Attributes:
        chains: prefix -> number of chain declarations whose name starts with it.
        total_chains: declarations over the whole dump.
        tables: the tables seen (``filter``, ``nat`` ...), in order.
    """

    chains: dict[str, int] = field(default_factory=dict)
    total_chains: int = 0
    tables: list[str] = field(default_factory=list)

    def merged(self, other: "IptablesChains") -> "IptablesChains":
        """Sum of two (IPv4 + IPv6)."""
        keys = list(dict.fromkeys([*self.chains, *other.chains]))
        return IptablesChains(
            chains={k: self.chains.get(k, 0) + other.chains.get(k, 0) for k in keys},
            total_chains=self.total_chains + other.total_chains,
            tables=list(dict.fromkeys([*self.tables, *other.tables])))


# Line breaks other than "\n" (str.splitlines sees them), a declaration line starting
# with a blank or holding a blank other than " ": a dump with one is read line by line
# (iptables-save writes none of them; a tab inside a rule's comment does not matter).
_ODD_BREAKS = ("\r", "\x0b", "\x0c", "\x1c", "\x1d", "\x1e")
_ODD_DECLARATION = re.compile(r"\n[ \t\x1f]*(?:[\t\x1f]|[:*][^\n]*[\t\x1f])")
_SAFE_PREFIX = re.compile(r"[^\s\"'\\]+")
_declaration_scanners: dict[tuple[str, ...], re.Pattern[str]] = {}


def _declaration_scanner(prefixes: tuple[str, ...]) -> re.Pattern[str]:
    rx = _declaration_scanners.get(prefixes)
    if rx is None:
        alternatives = "|".join(re.escape(p) for p in prefixes)
        # "*TABLE" -> ("*", TABLE, ""); ":NAME POLICY [p:b]" -> ("", "", the first
        # prefix NAME starts with, or "" for none); other lines do not match
        rx = _declaration_scanners[prefixes] = re.compile(
            rf"\n *(?:(\*)([^\n]*)|:(?: *({alternatives}))?)")
    return rx


#: Where each table's declarations start and end, and the next line after a table's
#: declarations that is a table header or a declaration (iptables-save writes none of the
#: latter among a table's rules).
_TABLE_HEADER = re.compile(r"\n\*([^\n]*)")
_DECLARATIONS = re.compile(r"(?:\n:[^\n]*)*")
_NEXT_HEADER_OR_DECLARATION = re.compile(r"\n *[:*]")


def _counts_in_save_layout(text: str, prefixes: tuple[str, ...]) -> IptablesChains | None:
    """Counts for a dump laid out as iptables-save writes it, or None for any other layout.

    iptables-save (legacy and nft) writes, per table, its ``*table`` line, then every chain
    declaration, then the rules and ``COMMIT``. The declarations are then one block per
    table, counted with ``str.count`` per prefix, and the rules are only searched (in C)
    for a line that would break that layout, which sends the dump to the general scan.
    ``text`` starts with ``"\n"``; prefixes are :data:`_SAFE_PREFIX` ones.
    """
    names = list(dict.fromkeys(prefixes))
    wins = {p: 0 for p in names}
    tables: list[str] = []
    total = 0
    nxt = _NEXT_HEADER_OR_DECLARATION.search(text)
    while nxt is not None:
        header = _TABLE_HEADER.match(text, nxt.start())
        if header is None:               # a declaration before any table, or after rules
            return None
        tables.append(header.group(1).rstrip())
        start = header.end()
        end = _DECLARATIONS.match(text, start).end()
        if text.count("\n: ", start, end):
            return None                  # ": NAME": the general scan reads it as the parser does
        total += text.count("\n:", start, end)
        for p in names:
            wins[p] += text.count("\n:" + p, start, end)
        nxt = _NEXT_HEADER_OR_DECLARATION.search(text, end)
    chains = {}
    for i, p in enumerate(names):       # the first matching prefix wins
        if any(p.startswith(q) for q in names[:i]):
            chains[p] = 0
            continue
        longer = [q for q in names[:i] if q.startswith(p)]
        chains[p] = wins[p] - sum(wins[q] for q in longer
                                  if not any(q != r and q.startswith(r) for r in longer))
    return IptablesChains(chains, total, list(dict.fromkeys(tables)))


def parse_iptables_chains(text: str, prefixes: Iterable[str] = DEFAULT_PREFIXES) -> IptablesChains:
    """Count an ``iptables-save`` dump's chain declarations by prefix (rules are skipped).

    The same counts as :func:`parse_iptables_save` gives in ``chains``, ``total_chains``
    and ``tables``, without a Python loop over the rules: a dump laid out as iptables-save
    writes it is counted per table's declaration block (the rules are only searched, in
    C, for a line that breaks the layout); any other layout by one regular-expression
    scan of the whole text that stops only on declaration lines. A dump the scan
    cannot read exactly (a line break other than ``\\n``, a tab or a unit separator
    around a declaration, non-ASCII text) or a prefix holding a blank or a quote is
    read by :func:`parse_iptables_save` instead.

    Args:
        text: the dump (IPv4 and IPv6 dumps may be concatenated).
        prefixes: the prefixes to count; the first matching prefix wins.

    Example:
        >>> c = parse_iptables_chains("*nat\\n:KUBE-SVC-ABC - [0:0]\\n:CILIUM_POST_nat - [0:0]\\n"
        ...                           "-A KUBE-SVC-ABC -j KUBE-SEP-1\\nCOMMIT\\n")
        >>> c.chains["KUBE-SVC"], c.chains["CILIUM"], c.total_chains, c.tables
        (1, 1, 2, ['nat'])
    """
    prefixes = tuple(prefixes)
    text = "\n" + text
    if (not text.isascii() or any(b in text for b in _ODD_BREAKS)
            or (("\t" in text or "\x1f" in text) and _ODD_DECLARATION.search(text))
            or not all(_SAFE_PREFIX.fullmatch(p) for p in prefixes)):
        s = parse_iptables_save(text, prefixes)
        return IptablesChains(s.chains, s.total_chains, s.tables)
    laid_out = _counts_in_save_layout(text, prefixes)
    if laid_out is not None:
        return laid_out
    found = Counter(_declaration_scanner(prefixes).findall(text))
    chains = {p: 0 for p in prefixes}
    tables: list[str] = []
    total = 0
    for (star, table, prefix), n in found.items():   # a few distinct keys, in order
        if star:
            tables.append(table.rstrip())
        else:
            total += n
            if prefix:
                chains[prefix] += n
    return IptablesChains(chains, total, list(dict.fromkeys(tables)))


def filter_iptables(text: str, prefixes: Iterable[str], *, comments: Iterable[str] = ()) -> str:
    """Remove every chain of ``prefixes`` from an ``iptables-save`` dump.

    Drops the chain declarations, the rules appended to those chains, the rules in other
    chains that jump to them, and (optionally) rules whose ``--comment`` contains one of
    ``comments`` (e.g. ``"flanneld forward"``). Everything else is kept byte for byte,
    so the result can be fed to ``iptables-restore`` (which replaces the tables it sees).
    This is the Python equivalent of ``iptables-save | grep -v KUBE | iptables-restore``
    without a shell pipe, and without dropping unrelated chains that share a word.

    Example:
        >>> dump = "*filter\\n:INPUT ACCEPT [0:0]\\n:KUBE-ROUTER-INPUT - [0:0]\\n" \\
        ...        "-A INPUT -j KUBE-ROUTER-INPUT\\n-A INPUT -j ACCEPT\\nCOMMIT\\n"
        >>> print(filter_iptables(dump, ["KUBE-ROUTER"]), end="")
        *filter
        :INPUT ACCEPT [0:0]
        -A INPUT -j ACCEPT
        COMMIT
    """
    prefixes = tuple(prefixes)
    comments = tuple(comments)
    kept: list[str] = []
    for raw in text.splitlines(keepends=True):
        line = raw.strip()
        if line.startswith(":"):
            parts = line[1:].split()
            if parts and _match(parts[0], prefixes):
                continue
        elif line.startswith("-A") or (line.startswith("[") and " -A " in line):
            chain, target, comment = rule_chain_and_target(line)
            if _match(chain, prefixes) or _match(target, prefixes):
                continue
            if comment and any(c in comment for c in comments):
                continue
        kept.append(raw)
    return "".join(kept)
