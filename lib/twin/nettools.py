"""What the network probing tools print: ``curl``, ``wget``, ``nslookup``, ``dig``, ``getent``.

Pure functions from an argument vector and two probes (``trace(ip, port, proto) ->
Trace`` and ``resolve(name, server) -> DnsAnswer``, both bound to a source by the
caller) to ``(rc, stdout, stderr, seconds)``: the exit code and output of the real tool
(curl 8, bind9 ``nslookup``/``dig`` 9.18, glibc ``getent``, busybox ``wget``) and how
long it would have waited (a timeout takes its time). The node's commands
(:mod:`twin.node.cmd_probe`) and the in-pod commands (:mod:`twin.podexec.net`) both use
them, with the network model's answers (:mod:`twin.controllers.network_view`).

Example:
    >>> rc, out, err, wait = curl(["-sS", "http://10.43.0.1:443/"], trace, resolve)  # doctest: +SKIP
"""
from __future__ import annotations

import hashlib
import ipaddress
import json
import time
from typing import Any, Callable
from urllib.parse import urlsplit

Trace = Any
Result = tuple[int, bytes, bytes, float]
KERNEL_CONNECT_SECONDS = 130.0     # tcp_syn_retries=6: when connect() gives up
DNS_TIMEOUT_SECONDS = 5.0          # one try of nslookup/dig (both try 3 times by default)
API_PORTS = (6443, 6444)


def _is_ip(text: str) -> bool:
    try:
        ipaddress.IPv4Address(text)
        return True
    except ValueError:
        return False


def _num(v: str, default: float) -> float:
    try:
        return float(v)
    except (TypeError, ValueError):
        return default


def _pod(t: Trace) -> str:
    md = (t.backend or {}).get("metadata") or {}
    return f"{md.get('namespace')}/{md.get('name')}" if t.backend else ""


def http_answer(t: Trace, scheme: str, path: str) -> tuple[int, str, str]:
    """``(status, content type, body)`` of what answered: the API server's 401 on its
    ports (and the ``kubernetes`` Service), otherwise the twin's stand-in page naming
    the pod (or node) that answered."""
    port = int(t.addr.rsplit(":", 1)[1]) if ":" in t.addr else 0
    if t.backend is None and port in API_PORTS:
        body = json.dumps({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                           "message": "Unauthorized", "reason": "Unauthorized", "code": 401})
        return 401, "application/json", body + "\n"
    who = f"pod {_pod(t)}" if t.backend else f"host {t.addr}"
    return 200, "text/html", (f"<html><body><h1>twin</h1><p>{who} answered {path} "
                              f"({t.addr})</p></body></html>\n")


def curl(args: list[str], trace: Callable[..., Trace], resolve: Callable[..., Any]) -> Result:
    """``curl [-sSfkIv] [-m S] [--connect-timeout S] [-o F] [-w FMT] [--resolve H:P:IP] URL``."""
    opts: dict[str, Any] = {"silent": False, "show": False, "fail": False, "insecure": False,
                            "head": False, "verbose": False, "out": None, "fmt": "", "timeout": None,
                            "resolve": {}}
    urls: list[str] = []
    it = iter(args)
    for a in it:
        if a.startswith("--"):
            key, _, val = a.partition("=")
            needs = key in ("--max-time", "--connect-timeout", "--output", "--write-out", "--resolve",
                            "--header", "--request", "--cacert", "--data", "--user-agent")
            if needs and not val:
                val = next(it, "")
            if key in ("--max-time", "--connect-timeout"):
                opts["timeout"] = min(_num(val, KERNEL_CONNECT_SECONDS), opts["timeout"] or 1e9)
            elif key == "--output":
                opts["out"] = val
            elif key == "--write-out":
                opts["fmt"] = val
            elif key == "--resolve":
                h, _, rest = val.partition(":")
                p, _, ip = rest.partition(":")
                opts["resolve"][(h, p)] = ip
            elif key in ("--insecure",):
                opts["insecure"] = True
            elif key == "--cacert":
                opts["insecure"] = True    # a CA given: assume it is the right one
            elif key in ("--silent", "--show-error", "--fail", "--head", "--verbose"):
                opts[{"--silent": "silent", "--show-error": "show", "--fail": "fail",
                      "--head": "head", "--verbose": "verbose"}[key]] = True
            elif not needs:
                return 2, b"", f"curl: option {a}: is unknown\ncurl: try 'curl --help' for more information\n".encode(), 0
            continue
        if a.startswith("-") and len(a) > 1:
            letters = a[1:]
            for i, ch in enumerate(letters):
                if ch in "mowHXdA":
                    val = letters[i + 1:] or next(it, "")
                    if ch == "m":
                        opts["timeout"] = min(_num(val, KERNEL_CONNECT_SECONDS), opts["timeout"] or 1e9)
                    elif ch == "o":
                        opts["out"] = val
                    elif ch == "w":
                        opts["fmt"] = val
                    break
                flag = {"s": "silent", "S": "show", "f": "fail", "k": "insecure", "I": "head",
                        "v": "verbose", "L": None}.get(ch, "?")
                if flag == "?":
                    return 2, b"", f"curl: option -{ch}: is unknown\n".encode(), 0
                if flag:
                    opts[flag] = True
            continue
        urls.append(a)
    if not urls:
        return 2, b"", b"curl: no URL specified\ncurl: try 'curl --help' or 'curl --manual' for more information\n", 0
    parts = urlsplit(urls[0] if "://" in urls[0] else "http://" + urls[0])
    scheme, host = parts.scheme or "http", parts.hostname or ""
    port = parts.port or (443 if scheme == "https" else 80)
    quiet_err = opts["silent"] and not opts["show"]

    def fail(rc: int, msg: str, wait: float = 0.0) -> Result:
        return rc, b"", (b"" if quiet_err else f"curl: ({rc}) {msg}\n".encode()), wait
    ip = opts["resolve"].get((host, str(port))) or (host if _is_ip(host) else None)
    if ip is None:
        ans = resolve(host, None)
        if not ans.addresses:
            wait = DNS_TIMEOUT_SECONDS * 2 if ans.rcode == "TIMEOUT" else 0.0
            return fail(6, f"Could not resolve host: {host}", wait)
        ip = ans.addresses[0]
    limit = opts["timeout"] or KERNEL_CONNECT_SECONDS
    t = trace(ip, port, "tcp")
    if not t.ok:
        if t.failure == "timeout":
            return fail(28, f"Failed to connect to {host} port {port} after {int(limit * 1000)} ms: "
                            "Timeout was reached", limit)
        return fail(7, f"Failed to connect to {host} port {port} after 0 ms: Couldn't connect to server")
    verbose = f"*   Trying {ip}:{port}...\n* Connected to {host} ({ip}) port {port}\n" if opts["verbose"] else ""
    if scheme == "https" and not opts["insecure"]:
        msg = "" if quiet_err else ("curl: (60) SSL certificate problem: unable to get local issuer "
                                    "certificate\nMore details here: https://curl.se/docs/sslcerts.html\n")
        return 60, b"", (verbose + msg).encode(), 0
    status, ctype, body = http_answer(t, scheme, parts.path or "/")
    head = (f"HTTP/1.1 {status} {'OK' if status == 200 else 'Unauthorized'}\r\n"
            f"Content-Type: {ctype}\r\nContent-Length: {len(body)}\r\n\r\n")
    if opts["fail"] and status >= 400:
        return 22, b"", (verbose + ("" if quiet_err else
                                    f"curl: (22) The requested URL returned error: {status}\n")).encode(), 0
    shown = head if opts["head"] else body
    out = b"" if opts["out"] == "/dev/null" else shown.encode()
    fmt = opts["fmt"].replace("%{http_code}", str(status)).replace("%{remote_ip}", ip) \
        .replace("%{remote_port}", str(port)).replace("\\n", "\n")
    return 0, out + fmt.encode(), verbose.encode(), 0


def wget(args: list[str], trace: Callable[..., Trace], resolve: Callable[..., Any]) -> Result:
    """busybox ``wget [-q] [-O FILE|-] [-T S] [--spider] URL``."""
    timeout, spider, out_file, urls = None, False, None, []
    it = iter(args)
    for a in it:
        if a in ("-q", "--quiet"):
            continue
        if a == "--spider":
            spider = True
        elif a.startswith("-T"):
            timeout = _num(a[2:] or next(it, ""), KERNEL_CONNECT_SECONDS)
        elif a.startswith("-O"):
            out_file = a[2:] or next(it, "-")
        elif a in ("-qO-", "-qO", "-O-"):
            out_file = "-"
        elif a.startswith("-"):
            return 1, b"", f"wget: unrecognized option '{a}'\nBusyBox v1.36.1 multi-call binary.\n".encode(), 0
        else:
            urls.append(a)
    if not urls:
        return 1, b"", b"BusyBox v1.36.1 multi-call binary.\n\nUsage: wget [-cqS] [--spider] [-O FILE] URL...\n", 0
    parts = urlsplit(urls[0] if "://" in urls[0] else "http://" + urls[0])
    host = parts.hostname or ""
    port = parts.port or (443 if parts.scheme == "https" else 80)
    ip = host if _is_ip(host) else None
    if ip is None:
        ans = resolve(host, None)
        if not ans.addresses:
            return 1, b"", f"wget: bad address '{host}'\n".encode(), 0
        ip = ans.addresses[0]
    t = trace(ip, port, "tcp")
    if not t.ok:
        if t.failure == "timeout":
            limit = timeout or 900.0
            return 1, b"", b"wget: download timed out\n", limit
        return 1, b"", f"wget: can't connect to remote host ({ip}): Connection refused\n".encode(), 0
    status, _, body = http_answer(t, parts.scheme or "http", parts.path or "/")
    if status >= 400:
        return 1, b"", f"wget: server returned error: HTTP/1.1 {status} Unauthorized\n".encode(), 0
    if spider:
        return 0, b"", b"remote file exists\n", 0
    return 0, (body.encode() if out_file == "-" else b""), b"", 0


def _dns_args(args: list[str]) -> tuple[str | None, str | None, dict[str, str], list[str]]:
    server = name = None
    plus: dict[str, str] = {}
    rest: list[str] = []
    for a in args:
        if a.startswith("@"):
            server = a[1:]
        elif a.startswith("+"):
            k, _, v = a[1:].partition("=")
            plus[k] = v
        elif a.startswith("-"):
            rest.append(a)
        elif name is None:
            name = a
        elif a.upper() in ("A", "AAAA", "SRV", "ANY", "IN"):
            continue
        elif server is None:
            server = a
    return name, server, plus, rest


def nslookup(args: list[str], resolve: Callable[..., Any], default_server: str) -> Result:
    """bind9 ``nslookup NAME [SERVER]``."""
    name, server, _, _ = _dns_args(args)
    if not name:
        return 1, b"", b"nslookup: the twin supports `nslookup NAME [SERVER]` only (no interactive mode)\n", 0
    ans = resolve(name, server)
    srv = ans.server or default_server
    if ans.rcode == "TIMEOUT":
        return 1, f";; connection timed out; no servers could be reached\n\n".encode(), b"", DNS_TIMEOUT_SECONDS * 3
    if ans.rcode == "REFUSED":
        return 1, f";; communications error to {srv}#53: connection refused\n".encode(), b"", 0
    head = f"Server:\t\t{srv}\nAddress:\t{srv}#53\n\n"
    if ans.rcode != "NOERROR" or not ans.addresses:
        return 1, (head + f"** server can't find {ans.name}: {ans.rcode}\n\n").encode(), b"", 0
    body = "".join(f"Name:\t{ans.name}\nAddress: {a}\n" for a in ans.addresses)
    return 0, (head + body + "\n").encode(), b"", 0


def dig(args: list[str], resolve: Callable[..., Any], default_server: str) -> Result:
    """bind9 ``dig [@SERVER] NAME [A] [+short] [+time=S] [+tries=N]``."""
    name, server, plus, _ = _dns_args(args)
    if not name:
        return 1, b"", b"dig: the twin supports `dig [@SERVER] NAME [+short]` only\n", 0
    ans = resolve(name, server)
    srv = ans.server or default_server
    tries, per = int(_num(plus.get("tries", "3"), 3)), _num(plus.get("time", "5"), 5)
    banner = f"\n; <<>> DiG 9.18.28-0ubuntu0.24.04.1-Ubuntu <<>> {' '.join(args)}\n"
    if ans.rcode in ("TIMEOUT", "REFUSED"):
        why = "timed out" if ans.rcode == "TIMEOUT" else "connection refused"
        errs = "".join(f";; communications error to {srv}#53: {why}\n" for _ in range(max(1, tries)))
        return 9, (errs + banner + "; (1 server found)\n;; global options: +cmd\n;; no servers could be reached\n").encode(), \
            b"", per * tries if ans.rcode == "TIMEOUT" else 0
    if "short" in plus:
        return 0, "".join(f"{a}\n" for a in ans.addresses).encode(), b"", 0
    qid = int(hashlib.sha256(ans.name.encode()).hexdigest()[:4], 16)
    fq = ans.name.rstrip(".") + "."
    answer = "".join(f"{fq}\t30\tIN\tA\t{a}\n" for a in ans.addresses)
    text = (banner + "; (1 server found)\n;; global options: +cmd\n;; Got answer:\n"
            f";; ->>HEADER<<- opcode: QUERY, status: {ans.rcode}, id: {qid}\n"
            f";; flags: qr aa rd; QUERY: 1, ANSWER: {len(ans.addresses)}, AUTHORITY: 0, ADDITIONAL: 1\n"
            ";; WARNING: recursion requested but not available\n\n"
            f";; QUESTION SECTION:\n;{fq}\t\tIN\tA\n\n"
            + (f";; ANSWER SECTION:\n{answer}\n" if answer else "")
            + f";; Query time: 0 msec\n;; SERVER: {srv}#53({srv}) (UDP)\n"
            f";; WHEN: {time.strftime('%a %b %d %H:%M:%S UTC %Y', time.gmtime())}\n;; MSG SIZE  rcvd: {60 + 16 * len(ans.addresses)}\n\n")
    return 0, text.encode(), b"", 0


def getent(args: list[str], resolve: Callable[..., Any]) -> Result:
    """glibc ``getent hosts|ahosts NAME...``: exit 2 when a name does not resolve."""
    if len(args) < 2 or args[0] not in ("hosts", "ahosts", "ahostsv4"):
        return 1, b"", b"getent: the twin supports `getent hosts NAME...` only\n", 0
    out, rc, wait = [], 0, 0.0
    for name in args[1:]:
        ans = resolve(name, None)
        if ans.rcode == "TIMEOUT":
            wait += DNS_TIMEOUT_SECONDS * 2
        if not ans.addresses:
            rc = 2
            continue
        for a in ans.addresses:
            out.append(f"{a:<15} {ans.name}\n" if args[0] == "hosts" else f"{a:<15} STREAM {ans.name}\n")
    return rc, "".join(out).encode(), b"", wait
