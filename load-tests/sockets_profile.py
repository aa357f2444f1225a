"""Groups two perf profiles of the server (TCP and Unix socket, made by load-tests/sockets_profile.sh) by where
the time goes, and prints a Markdown table in % of samples and in µs per request.
    python3 load-tests/sockets_profile.py DIR TCP_US_PER_REQUEST UNIX_US_PER_REQUEST
"""

import collections
import re
import subprocess
import sys

KERNEL = [
    ("TCP/IP stack, netfilter, loopback device",
     r"tcp_|ip_|nf_|__nf|skb|netif|dev_|sk_|inet|conntrack|loopback|napi|process_backlog|neigh|csum|release_sock"
     r"|lock_sock"),
    ("Unix socket", r"unix_"),
    ("wakeups, scheduling, epoll",
     r"spin_unlock_irqrestore|finish_task_switch|wake|schedul|futex|ep_|epoll|_raw_spin|select_task|enqueue"
     r"|dequeue|update_curr|pick_next|switch|ttwu|hrtimer|perf_"),
    ("syscall entry and exit, copies",
     r"syscall|entry_|copy_|_copy|iov|fdget|fput|vfs_|__fget|sock_|__sys|rw_verify|security_|apparmor|aa_|fsnotify"),
    ("kernel memory", r"slab|kmalloc|kfree|kmem|memcg|page|alloc|free"),
]
USER = ["infergate", "libc (malloc, memcpy)", "other"]


def shares(path):
    report = subprocess.run(["perf", "report", "-i", path, "--no-children", "--sort", "dso,sym", "--stdio",
                             "-g", "none"], capture_output=True, text=True, check=True).stdout
    totals = collections.Counter()
    for line in report.splitlines():
        m = re.match(r"\s+([0-9.]+)%\s+(\S+)\s+\[(.)\]\s+(.*)", line)
        if not m:
            continue
        percent, dso, kind, symbol = float(m[1]), m[2], m[3], m[4]
        if kind == "k":
            where = next((name for name, pattern in KERNEL if re.search(pattern, symbol)), "kernel, other")
        elif dso == "infergate":
            where = "infergate"
        elif dso.startswith("libc"):
            where = "libc (malloc, memcpy)"
        else:
            where = "other"
        totals[where] += percent
    return totals


def main():
    folder, tcp_us, unix_us = sys.argv[1], float(sys.argv[2]), float(sys.argv[3])
    tcp, unix = shares(f"{folder}/tcp.data"), shares(f"{folder}/unix.data")
    print("| where | TCP % | Unix % | TCP µs/req | Unix µs/req | saved µs |")
    print("|---|---|---|---|---|---|")
    for where in [name for name, _ in KERNEL] + ["kernel, other"] + USER:
        a, b = tcp[where] * tcp_us / 100, unix[where] * unix_us / 100
        print(f"| {where} | {tcp[where]:.1f} | {unix[where]:.1f} | {a:.1f} | {b:.1f} | {a - b:+.1f} |")
    print(f"| total | 100 | 100 | {tcp_us:.1f} | {unix_us:.1f} | {tcp_us - unix_us:+.1f} |")


if __name__ == "__main__":
    main()
