"""The order of the servers' turns in each round of a measurement that takes turns.

A turn leaves work behind that runs into the next one (mail still being sent, and on
PostgreSQL the autovacuum and autoanalyze that its writes set off), so the server measured
after another may pay for some of that one's work. With the order rotating (0 1 2 3, then
1 2 3 0, ...) each server always follows the same one: in growth on PostgreSQL the baseline
always followed the control, and the control's interval for the start left out 1 in all four
runs measured so (the baseline the slower). In a Williams design each server follows each other
server equally often, and leads equally often; in two growth runs on PostgreSQL measured so,
every interval of the control held 1.
"""

from __future__ import annotations


def balanced_orders(n: int) -> list[list[int]]:
    """Orders of `n` servers (0 to n-1), one per round in turn, in which every server comes
    first equally often and directly after each other server equally often: n orders for an
    even n, 2n for an odd n."""
    first = [0]
    low, high = 1, n - 1
    while len(first) < n:
        first.append(low if len(first) % 2 else high)
        if len(first) % 2:
            high -= 1
        else:
            low += 1
    orders = [[(server + shift) % n for server in first] for shift in range(n)]
    if n % 2 and n > 1:
        orders += [order[::-1] for order in orders]
    return orders


def rotating_orders(n: int) -> list[list[int]]:
    """Orders of `n` servers in which the first moves on by one each round (0 1 2, 1 2 0, ...)."""
    return [[(shift + step) % n for step in range(n)] for shift in range(n)]


def rounds_of_turns(n: int, rounds: int, *, balanced: bool = True) -> list[list[int]]:
    """The order of the turns of `n` servers in each of `rounds` rounds: the balanced orders
    (or the rotating ones) in turn, again from the first when they run out."""
    orders = balanced_orders(n) if balanced else rotating_orders(n)
    return [orders[index % len(orders)] for index in range(max(1, rounds))]
