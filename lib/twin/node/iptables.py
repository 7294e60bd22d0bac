"""A node's iptables: tables, chains and rules, rendered and parsed as iptables-save text.

One :class:`Iptables` per address family (``node.iptables``, ``node.ip6tables``). The
commands that reach it (``iptables-save``, ``iptables-restore`` and their ip6 twins) are
in :mod:`twin.node.cmd_net`; what k3s writes into it is in :mod:`twin.node.k3s_network`
and :mod:`twin.node.kube_proxy`.

Example:
    >>> ipt = Iptables(4)
    >>> ipt.ensure_rule("filter", "-A INPUT -j KUBE-FIREWALL")
    True
    >>> ipt.chains("filter")
    ['INPUT', 'FORWARD', 'OUTPUT', 'KUBE-FIREWALL']
"""
from __future__ import annotations

import itertools
import time
from typing import Any, Callable, Iterable

IPTABLES_VERSION = "v1.8.7"

BUILTIN_CHAINS = {
    "filter": ("INPUT", "FORWARD", "OUTPUT"),
    "nat": ("PREROUTING", "INPUT", "OUTPUT", "POSTROUTING"),
    "mangle": ("PREROUTING", "INPUT", "FORWARD", "OUTPUT", "POSTROUTING"),
    "raw": ("PREROUTING", "OUTPUT"),
    "security": ("INPUT", "FORWARD", "OUTPUT"),
}
BUILTIN_TARGETS = frozenset("""
ACCEPT DROP REJECT RETURN MASQUERADE SNAT DNAT REDIRECT MARK CONNMARK LOG NFLOG CT NOTRACK
TCPMSS TPROXY QUEUE NFQUEUE CHECKSUM TRACE SET AUDIT CLASSIFY DSCP TOS TTL HL
""".split())


class IptablesError(ValueError):
    """An ``iptables-restore`` input the real tool rejects (nothing is applied)."""


#: Generations come from one counter shared by every table: a table's generation never
#: repeats, and a new table never starts at another table's number.
_GENERATIONS = itertools.count(1)


class _Chains(dict):
    """A table's chains (name -> policy) that bump the table's generation when changed.

    Callers may edit ``table.chains`` directly (kube-proxy drops its service chains so),
    so the dict itself reports every change; reads cost what a dict's cost.
    """

    __slots__ = ("_table",)

    def __init__(self, table: "Table", items: dict[str, str] | None = None) -> None:
        super().__init__(items or {})
        self._table = table

    def __setitem__(self, key: str, value: str) -> None:
        super().__setitem__(key, value)
        self._table.changed()

    def __delitem__(self, key: str) -> None:
        super().__delitem__(key)
        self._table.changed()

    def pop(self, *args: Any) -> Any:
        self._table.changed()
        return super().pop(*args)

    def popitem(self) -> tuple[str, str]:
        self._table.changed()
        return super().popitem()

    def setdefault(self, key: str, default: Any = None) -> Any:
        if key not in self:
            self._table.changed()
        return super().setdefault(key, default)

    def update(self, *args: Any, **kw: Any) -> None:
        self._table.changed()
        super().update(*args, **kw)

    def clear(self) -> None:
        self._table.changed()
        super().clear()

    def __ior__(self, other: Any) -> "_Chains":
        self._table.changed()
        return super().__ior__(other)

    def __reduce__(self) -> Any:   # copy/pickle give a plain dict
        return (dict, (dict(self),))


class Table:
    """One table: chains with their policies, and rules indexed by chain and by text.

    Rules are kept three ways, all updated by the methods below (nothing else may edit
    them): in insertion order (what :meth:`Iptables.rules` returns), grouped by chain
    (what ``iptables-save`` renders, so rendering is linear), and as a count per text
    (so "is this rule present" is O(1); a restore may load the same rule twice).

    Every change (a rule added or removed, a chain added, removed or given a policy,
    also through ``chains`` directly) gives the table a new :attr:`generation`; its
    ``iptables-save`` text is rendered once per generation (:meth:`render`), so reading
    an unchanged node's rules again costs no rendering.
    """

    __slots__ = ("_chains", "_order", "_by_chain", "_count", "generation", "_rendered")

    def __init__(self, chains: dict[str, str] | None = None, rules: Iterable[str] = ()) -> None:
        self.generation = next(_GENERATIONS)
        self._rendered: tuple[int, bool, str] | None = None   # (generation, counters, text)
        self._chains = _Chains(self, chains)                 # name -> policy ("-" = user chain)
        self._order: list[tuple[str, str]] = []            # (chain, "-A CHAIN ...") in order
        self._by_chain: dict[str, list[str]] = {}
        self._count: dict[str, int] = {}
        for r in rules:
            self.append(r)

    @property
    def chains(self) -> dict[str, str]:
        """Chain name -> policy (``-`` for a user chain), in creation order; changes to
        this dict count as changes of the table."""
        return self._chains

    @chains.setter
    def chains(self, value: dict[str, str]) -> None:
        self._chains = _Chains(self, value)
        self.changed()

    def changed(self) -> None:
        """Record a change: a new generation (what was rendered before no longer counts)."""
        self.generation = next(_GENERATIONS)

    def render(self, name: str, counters: bool = False) -> str:
        """The table's chain lines and rules as ``iptables-save`` prints them between
        ``*name`` and ``COMMIT`` (each line ends with a newline); rendered once per
        generation and counters flag."""
        cached = self._rendered
        if cached is not None and cached[0] == self.generation and cached[1] == counters:
            return cached[2]
        chains, by_chain = self._chains, self._by_chain
        builtin = BUILTIN_CHAINS[name]
        # built-in chains in their order, then user chains by name (set difference
        # and sort in C: a node with kube-proxy has thousands of chains)
        listed = [c for c in builtin if c in chains]
        listed += sorted(chains.keys() - set(builtin))
        out = [f":{c} {chains[c]} [0:0]" for c in listed]
        # iptables-save lists each chain's rules together, chains in listing order.
        grouped = [by_chain[c] for c in listed if c in by_chain]
        if counters:
            out += ["[0:0] " + r for own in grouped for r in own]
        else:
            out += itertools.chain.from_iterable(grouped)
        text = "\n".join(out) + "\n" if out else ""
        self._rendered = (self.generation, counters, text)
        return text

    @staticmethod
    def chain_of(rule: str) -> str:
        return rule.split(None, 2)[1]

    @property
    def rules(self) -> list[str]:
        """Every rule, in insertion order (a copy)."""
        return [r for _, r in self._order]

    def __contains__(self, rule: str) -> bool:
        return rule in self._count

    def __len__(self) -> int:
        return len(self._order)

    def chain_rules(self, chain: str) -> list[str]:
        """The rules of one chain, in order (a copy)."""
        return list(self._by_chain.get(chain, ()))

    def __copy__(self) -> "Table":
        return self.copy()

    def __deepcopy__(self, memo: dict) -> "Table":
        return self.copy()   # rules and chain names are strings: a copy shares nothing mutable

    def copy(self) -> "Table":
        t = Table(self._chains)
        t._order = list(self._order)
        t._by_chain = {c: list(rs) for c, rs in self._by_chain.items()}
        t._count = dict(self._count)
        return t

    def append(self, rule: str, chain: str | None = None) -> None:
        chain = chain or self.chain_of(rule)
        self.generation = next(_GENERATIONS)
        self._order.append((chain, rule))
        self._by_chain.setdefault(chain, []).append(rule)
        self._count[rule] = self._count.get(rule, 0) + 1

    def insert_first(self, rule: str, chain: str | None = None) -> None:
        """Insert at the head of its chain (just before the chain's first rule)."""
        chain = chain or self.chain_of(rule)
        own = self._by_chain.get(chain)
        if not own:
            self.append(rule, chain)
            return
        self.generation = next(_GENERATIONS)
        # The first occurrence of the chain's first rule is that rule (a rule's text
        # names its chain), so list.index finds the position in C, without parsing.
        self._order.insert(self._order.index((chain, own[0])), (chain, rule))
        own.insert(0, rule)
        self._count[rule] = self._count.get(rule, 0) + 1

    def remove_if(self, drop: Callable[[str, str], bool]) -> int:
        """Remove every rule for which ``drop(chain, rule)`` is true; returns how many."""
        keep = [cr for cr in self._order if not drop(*cr)]
        removed = len(self._order) - len(keep)
        if removed:
            self._reindex(keep)
        return removed

    def remove_chains(self, chains: set[str] | frozenset[str]) -> int:
        """Remove the rules of these chains (declared or not); returns how many."""
        if not any(c in self._by_chain for c in chains):
            return 0
        return self.remove_if(lambda c, _r: c in chains)

    def clear_rules(self) -> None:
        self._reindex([])

    def _reindex(self, order: list[tuple[str, str]]) -> None:
        self.generation = next(_GENERATIONS)
        self._order = order
        self._by_chain = {}
        self._count = {}
        for c, r in order:
            self._by_chain.setdefault(c, []).append(r)
            self._count[r] = self._count.get(r, 0) + 1

    def check(self) -> list[str]:
        """Inconsistencies between the three views of the rules (empty when sound)."""
        problems: list[str] = []
        counted: dict[str, int] = {}
        for _, r in self._order:
            counted[r] = counted.get(r, 0) + 1
        if counted != self._count:
            problems.append("count index differs from the rules")
        grouped: dict[str, list[str]] = {}
        for c, r in self._order:
            grouped.setdefault(c, []).append(r)
            if self.chain_of(r) != c:
                problems.append(f"rule filed under {c}: {r}")
        if {c: rs for c, rs in self._by_chain.items() if rs} != grouped:
            problems.append("chain index differs from the rules")
        return problems


class Iptables:
    """The rules of one address family, rendered and parsed as iptables-save text.

    Work can be deferred with :meth:`defer` (the node defers kube-proxy's service chains,
    which cost O(cluster endpoints) per node): it runs before anything else reads or
    changes the rules, so what any caller sees is the same as if it had run at once.
    """

    def __init__(self, family: int = 4) -> None:
        self.family = family
        self._tables: dict[str, Table] = {}
        self._pending: Callable[[], None] | None = None

    # -------------------------------------------------------------- deferred work
    @property
    def tables(self) -> dict[str, Table]:
        """The tables by name (pending work done first)."""
        self.settle()
        return self._tables

    @property
    def pending(self) -> bool:
        """Whether deferred work waits to run."""
        return self._pending is not None

    def defer(self, fn: Callable[[], None]) -> None:
        """Run ``fn`` before the next read or change of the rules.

        A pending function is replaced: callers defer only work that the new function
        makes moot (a full kube-proxy sync rewrites everything the previous one wrote).
        """
        self._pending = fn

    def discard_pending(self) -> None:
        """Forget deferred work (see :meth:`defer`)."""
        self._pending = None

    def settle(self) -> None:
        """Run deferred work now (no-op when there is none)."""
        fn = self._pending
        if fn is not None:
            self._pending = None
            fn()

    def table_names(self) -> list[str]:
        """Names of the loaded tables, without running deferred work.

        Deferred work only fills tables that exist already (kube-proxy's nat and filter
        chains are created eagerly), so the names are the same either way.
        """
        return list(self._tables)

    # -------------------------------------------------------------- changes
    def reset(self) -> None:
        """A booted kernel: no table loaded, no rule."""
        self._pending = None
        self._tables.clear()

    def _table(self, name: str) -> Table:
        t = self._tables.get(name)
        if t is None:
            t = self._tables[name] = Table({c: "ACCEPT" for c in BUILTIN_CHAINS[name]})
        return t

    def ensure_chain(self, table: str, chain: str) -> bool:
        self.settle()
        t = self._table(table)
        if chain in t.chains:
            return False
        t.chains[chain] = "-"
        return True

    @staticmethod
    def parse_rule(rule: str) -> tuple[str, tuple[str, ...]]:
        """The chain of ``-A CHAIN ...`` and the user chains it jumps to (-j/-g)."""
        parts = rule.split()
        targets = tuple(parts[parts.index(opt) + 1] for opt in ("-j", "-g")
                        if opt in parts and parts[parts.index(opt) + 1] not in BUILTIN_TARGETS)
        return parts[1], targets

    def ensure_rule(self, table: str, rule: str, *, first: bool = False) -> bool:
        """Add ``-A CHAIN ...`` unless present; ``first`` inserts at the chain's head."""
        self.settle()
        chain, targets = self.parse_rule(rule)
        return self.ensure_parsed(table, chain, targets, rule, first)

    def ensure_parsed(self, table: str, chain: str, targets: tuple[str, ...], rule: str,
                      first: bool = False) -> bool:
        """:meth:`ensure_rule` for a rule parsed already (``parse_rule(rule)`` gives
        ``chain`` and ``targets``); the caller has settled deferred work."""
        t = self._table(table)
        chains = t.chains
        if chain not in chains:
            chains[chain] = "-"
        # A jump needs its target chain, as with the real iptables.
        for target in targets:
            if target not in chains:
                chains[target] = "-"
        if rule in t._count:
            return False
        if first:
            t.insert_first(rule, chain)
        else:
            t.append(rule, chain)
        return True

    def delete_chain(self, table: str, chain: str) -> None:
        self.settle()
        t = self._table(table)
        jump = f"-j {chain}"
        t.remove_if(lambda c, r: c == chain or jump in r)
        t.chains.pop(chain, None)

    # -------------------------------------------------------------- reads
    def chains(self, table: str | None = None) -> list[str]:
        self.settle()
        names = (self._tables.get(table, Table()).chains if table else
                 [c for t in self._tables.values() for c in t.chains])
        return list(names)

    def rules(self, table: str | None = None) -> list[str]:
        self.settle()
        if table:
            return self._tables.get(table, Table()).rules
        return [r for t in self._tables.values() for r in t.rules]

    def check(self) -> list[str]:
        """Index inconsistencies of every table (empty when sound; for tests)."""
        self.settle()
        return [f"{name}: {p}" for name, t in self._tables.items() for p in t.check()]

    def save(self, table: str | None = None, counters: bool = False) -> str:
        """Text as ``iptables-save`` prints it (counters are always zero; ``-c`` adds them
        to each rule). Each table's body is rendered once per change (:meth:`Table.render`);
        only the time stamps are new on every call."""
        self.settle()
        tool = "ip6tables-save" if self.family == 6 else "iptables-save"
        now = time.strftime("%a %b %d %H:%M:%S %Y", time.gmtime())
        out: list[str] = []
        for name in ("raw", "mangle", "nat", "filter", "security"):
            t = self._tables.get(name)
            if t is None or (table and name != table):
                continue
            out.append(f"# Generated by {tool} {IPTABLES_VERSION} on {now}\n*{name}\n")
            out.append(t.render(name, counters))
            out.append(f"COMMIT\n# Completed on {now}\n")
        return "".join(out)

    def restore(self, text: str, *, noflush: bool = False, table: str | None = None) -> list[str]:
        """Apply ``iptables-restore`` input atomically; returns the tables it touched.

        Without ``noflush`` each table named in the input is replaced entirely, as the
        real tool does; tables not named are untouched.

        Raises:
            IptablesError: with the real tool's message and the failing line number.
        """
        self.settle()
        staged: dict[str, Table] = {}
        current: str | None = None
        tool = "ip6tables-restore" if self.family == 6 else "iptables-restore"
        lines = text.splitlines()
        for no, raw in enumerate(lines, 1):
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            if line.startswith("[") and "] " in line:   # iptables-save -c counters
                line = line.split("] ", 1)[1].strip()
            if line.startswith("*"):
                name = line[1:].strip()
                if name not in BUILTIN_CHAINS:
                    raise IptablesError(f"{tool} {IPTABLES_VERSION} (nf_tables): table '{name}' "
                                        f"does not exist\nError occurred at line: {no}")
                if current is not None:
                    raise IptablesError(f"{tool}: COMMIT expected at line {no}")
                current = name
                if table and name != table:
                    current = "#skip"
                    continue
                if noflush and name in self._tables:
                    staged[name] = self._tables[name].copy()
                else:
                    staged[name] = Table({c: "ACCEPT" for c in BUILTIN_CHAINS[name]})
                continue
            if current is None:
                raise IptablesError(f"{tool} {IPTABLES_VERSION} (nf_tables): no command "
                                    f"specified\nError occurred at line: {no}")
            if line == "COMMIT":
                if current != "#skip":
                    self._check_targets(staged[current], tool, lines)
                current = None
                continue
            if current == "#skip":
                continue
            t = staged[current]
            if line.startswith(":"):
                parts = line[1:].split()
                chain = parts[0]
                policy = parts[1] if len(parts) > 1 else "-"
                if chain in BUILTIN_CHAINS[current]:
                    t.chains[chain] = policy
                else:
                    t.chains[chain] = "-"
                    if noflush:   # a declared chain is flushed in --noflush mode
                        t.remove_chains({chain})
                continue
            parts = line.split()
            if parts[0] in ("-A", "-I", "--append", "--insert") and len(parts) > 1:
                chain = parts[1]
                if chain not in t.chains:
                    raise IptablesError(f"{tool} {IPTABLES_VERSION} (nf_tables): Chain '{chain}' "
                                        f"does not exist\nError occurred at line: {no}\n"
                                        f"Try `{tool} -h' or '{tool} --help' for more information.")
                rule = "-A " + " ".join(parts[1:])
                if parts[0] in ("-I", "--insert"):
                    t.insert_first(rule, chain)
                else:
                    t.append(rule, chain)
                continue
            if parts[0] in ("-N", "--new-chain") and len(parts) > 1:
                t.chains.setdefault(parts[1], "-")
                continue
            if parts[0] in ("-X", "--delete-chain") and len(parts) > 1:
                t.chains.pop(parts[1], None)
                continue
            if parts[0] in ("-F", "--flush"):
                if len(parts) > 1:
                    t.remove_chains({parts[1]})
                else:
                    t.clear_rules()
                continue
            raise IptablesError(f"{tool} {IPTABLES_VERSION} (nf_tables): unknown option "
                                f"\"{parts[0]}\"\nError occurred at line: {no}")
        if current is not None:
            raise IptablesError(f"{tool}: COMMIT expected at line {len(lines) + 1}")
        self._tables.update(staged)
        return list(staged)

    @staticmethod
    def _check_targets(t: Table, tool: str, lines: list[str]) -> None:
        for _chain, rule in t._order:
            parts = rule.split()
            for opt in ("-j", "-g", "--jump", "--goto"):
                if opt in parts:
                    target = parts[parts.index(opt) + 1]
                    if target not in BUILTIN_TARGETS and target not in t.chains:
                        no = next((i for i, l in enumerate(lines, 1) if l.strip() == rule), 0)
                        raise IptablesError(
                            f"{tool} {IPTABLES_VERSION} (nf_tables): Couldn't load target "
                            f"`{target}':No such file or directory\n\nError occurred at line: {no}\n"
                            f"Try `{tool} -h' or '{tool} --help' for more information.")
