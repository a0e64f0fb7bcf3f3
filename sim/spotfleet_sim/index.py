"""The instance index: DescribeInstances by tag, state and id without scanning every tag.

moto 5.2.5 answers ``DescribeInstances`` by testing every instance against the filters
and reads each instance's tags with a scan of every tag in the region, twice (to
filter and to render): quadratic in the fleet. With hundreds of policies in one
account that stalled the operator. The index keeps, per (account, region):

- every reservation in moto's order and every instance in it (``InstanceIds`` and the
  ordering and grouping moto answers with);
- each instance's tags, and the inverted maps tag key -> instances and
  (key, value) -> instances (``tag:<key>``, ``tag-key``);
- the last state it saw of each instance (state-change notifications);
- each instance's rendered XML, as moto's own serializer writes it, re-rendered when
  the instance changes (its tags, its state, or anything an unknown call may touch).

It is kept right by :meth:`InstanceIndex.refresh`, which the layer calls after every
call that can change instances (RunInstances, CreateFleet, TerminateInstances,
Stop/Start, CreateTags/DeleteTags, interruptions; any other mutating call refreshes
everything) and which reports the state changes it saw. Instance state and
existence are read from moto at query time as well, so a filter on state is always
answered from moto's truth. Callers hold the layer's state lock around every method.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from spotfleet_sim import backend

TAG_KEY = "tag-key"
STATE = "instance-state-name"
INSTANCE_ID = "instance-id"
TAG_PREFIX = "tag:"


def supported_filter(name: str) -> bool:
    """Filters the index answers itself (everything else goes to moto)."""
    return name in (TAG_KEY, STATE, INSTANCE_ID) or (
        name.startswith(TAG_PREFIX) and len(name) > len(TAG_PREFIX)
    )


@dataclass(frozen=True)
class Change:
    """An instance state change seen by a refresh (``old`` None: a new instance)."""

    account: str
    region: str
    instance_id: str
    old: str | None
    new: str


@dataclass(frozen=True)
class Query:
    """A DescribeInstances request the index can answer (filters: name -> values)."""

    instance_ids: tuple[str, ...] = ()
    filters: tuple[tuple[str, tuple[str, ...]], ...] = ()
    max_results: int = 100  # moto's default page size
    next_token: str | None = None


@dataclass
class _Reservation:
    seq: int
    reservation: Any  # moto's Reservation
    instance_ids: list[str] = field(default_factory=list)
    shell: tuple[str, str] | None = None  # rendered XML around its instance items


@dataclass
class _Instance:
    instance: Any  # moto's Instance
    reservation_id: str
    order: tuple[int, int]  # (reservation seq, position in the reservation)
    tags: dict[str, str]
    state: str
    xml: str | None = None
    xml_state: str | None = None


class _Region:
    """The index of one moto EC2 backend."""

    def __init__(self, ec2: Any) -> None:
        self.ec2 = ec2
        self.reservations_ref = ec2.reservations
        self.tags_ref = ec2.tags
        self.seen = 0
        self.reservations: dict[str, _Reservation] = {}
        self.instances: dict[str, _Instance] = {}
        self.by_key: dict[str, set[str]] = {}
        self.by_value: dict[str, dict[str, set[str]]] = {}

    def current(self, ec2: Any) -> bool:
        """Still the same moto state (moto's reset replaces these dicts)."""
        return (
            ec2 is self.ec2
            and ec2.reservations is self.reservations_ref
            and ec2.tags is self.tags_ref
        )

    # -- keeping up ------------------------------------------------------------
    def discover(self) -> list[_Instance]:
        """Index reservations moto added since the last look; returns their instances."""
        found: list[_Instance] = []
        if len(self.reservations_ref) <= self.seen:
            return found
        new = list(itertools.islice(self.reservations_ref.values(), self.seen, None))
        for res in new:
            self.seen += 1
            entry = _Reservation(self.seen, res)
            self.reservations[res.id] = entry
            for pos, inst in enumerate(list(res.instances)):
                entry.instance_ids.append(inst.id)
                item = _Instance(inst, res.id, (entry.seq, pos), {}, backend.instance_state(inst))
                self.instances[inst.id] = item
                self._set_tags(inst.id, item, self._moto_tags(inst.id))
                found.append(item)
        return found

    def _moto_tags(self, resource_id: str) -> dict[str, str]:
        # moto's own tag store, read directly (moto's get_tags scans the whole store)
        tags = self.tags_ref.get(resource_id)
        return dict(tags) if tags else {}

    def _set_tags(self, iid: str, item: _Instance, tags: dict[str, str]) -> None:
        for key, value in item.tags.items():
            self.by_key[key].discard(iid)
            self.by_value[key][value].discard(iid)
            if not self.by_value[key][value]:
                del self.by_value[key][value]
            if not self.by_key[key]:
                del self.by_key[key]
                del self.by_value[key]
        item.tags = tags
        for key, value in tags.items():
            self.by_key.setdefault(key, set()).add(iid)
            self.by_value.setdefault(key, {}).setdefault(value, set()).add(iid)

    def reread(self, item_id: str) -> str | None:
        """Re-read one instance's tags and state from moto; returns its old state when the
        state changed."""
        item = self.instances.get(item_id)
        if item is None:
            return None
        tags = self._moto_tags(item_id)
        if tags != item.tags:
            self._set_tags(item_id, item, tags)
        item.xml = None
        state = backend.instance_state(item.instance)
        if state == item.state:
            return None
        old, item.state = item.state, state
        return old

    # -- answering ----------------------------------------------------------------
    def _match_tags(self, name: str, values: Sequence[str]) -> set[str]:
        if name == TAG_KEY:
            table = self.by_key
            out: set[str] = set()
            for value in values:
                if backend.is_pattern(value):
                    pattern = backend.tag_pattern(value)
                    for key, ids in table.items():
                        if pattern.match(key) or key in values:
                            out |= ids
                else:
                    out |= table.get(value, set())
            return out
        by_value = self.by_value.get(name[len(TAG_PREFIX) :], {})
        out = set()
        for value in values:
            if backend.is_pattern(value):
                pattern = backend.tag_pattern(value)
                for tag_value, ids in by_value.items():
                    if pattern.match(tag_value) or tag_value in values:
                        out |= ids
            else:
                out |= by_value.get(value, set())
        return out

    def select(self, query: Query) -> list[str] | None:
        """Matching instance ids in moto's order; None when moto must answer (unknown or
        repeated InstanceIds: moto's error)."""
        chosen: set[str] | None = None
        if query.instance_ids:
            if len(set(query.instance_ids)) != len(query.instance_ids):
                return None
            if any(iid not in self.instances for iid in query.instance_ids):
                return None
            chosen = set(query.instance_ids)
        states: list[tuple[str, ...]] = []
        for name, values in query.filters:
            if name == STATE:
                states.append(values)
                continue
            if name == INSTANCE_ID:
                hits = {v for v in values if v in self.instances}
            else:
                hits = self._match_tags(name, values)
            chosen = hits if chosen is None else chosen & hits
        ids = list(self.instances) if chosen is None else list(chosen)
        for values in states:  # moto's truth, read now
            ids = [i for i in ids if backend.instance_state(self.instances[i].instance) in values]
        return sorted(ids, key=lambda i: self.instances[i].order)

    def group(self, ids: Sequence[str]) -> list[tuple[str, list[str]]]:
        """Ordered ids as (reservation id, its matching instance ids), in moto's order."""
        groups: list[tuple[str, list[str]]] = []
        for iid in ids:
            rid = self.instances[iid].reservation_id
            if groups and groups[-1][0] == rid:
                groups[-1][1].append(iid)
            else:
                groups.append((rid, [iid]))
        return groups

    def render(self, rid: str, members: Sequence[str]) -> str:
        """The reservation's ``<item>`` holding the given instances."""
        res = self.reservations[rid]
        items = [self._item(res, self.instances[i]) for i in members]
        assert res.shell is not None
        return res.shell[0] + "".join(items) + res.shell[1]

    def _item(self, res: _Reservation, item: _Instance) -> str:
        state = backend.instance_state(item.instance)
        if item.xml is None or item.xml_state != state:
            rendered = backend.render_instance(res.reservation, item.instance, item.tags)
            item.xml, item.xml_state = rendered.item, state
            res.shell = (rendered.prefix, rendered.suffix)
        assert item.xml is not None
        return item.xml


class InstanceIndex:
    """Every region's index; see the module docstring."""

    def __init__(self) -> None:
        self._regions: dict[tuple[str, str], _Region] = {}

    def clear(self) -> None:
        """Forget everything (rebuilt from moto on next use; what is there then is new)."""
        self._regions.clear()

    def _region(self, account: str, region: str) -> _Region:
        ec2 = backend.ec2(account, region)
        entry = self._regions.get((account, region))
        if entry is None or not entry.current(ec2):
            entry = _Region(ec2)  # its instances count as new for the next refresh
            self._regions[(account, region)] = entry
        return entry

    def refresh(
        self, account: str, region: str, touched: Iterable[str] | None = ()
    ) -> list[Change]:
        """Take in moto's new reservations and re-read the ``touched`` instances (None:
        every instance, and re-render them all). Returns the state changes seen."""
        entry = self._region(account, region)
        changes = [
            Change(account, region, item.instance.id, None, item.state) for item in entry.discover()
        ]
        ids = list(entry.instances) if touched is None else list(touched)
        for iid in ids:
            item = entry.instances.get(iid)
            old = entry.reread(iid)
            if old is not None and item is not None:
                changes.append(Change(account, region, iid, old, item.state))
        return changes

    def describe(self, account: str, region: str, query: Query) -> bytes | None:
        """moto's DescribeInstances answer for ``query``, or None when moto must answer
        (an unknown ``NextToken``, unknown or repeated ``InstanceIds``, ``MaxResults`` < 1).
        Pages hold ``max_results`` reservations; the token is the last one's id."""
        if query.max_results < 1:
            return None
        entry = self._region(account, region)
        ids = entry.select(query)
        if ids is None:
            return None
        groups = entry.group(ids)
        start = 0
        if query.next_token:
            order = [rid for rid, _m in groups]
            if query.next_token not in order:
                return None
            start = order.index(query.next_token) + 1
        page = groups[start : start + query.max_results]
        token = page[-1][0] if len(groups) > start + query.max_results else None
        return backend.describe_instances_xml([entry.render(r, m) for r, m in page], token)
