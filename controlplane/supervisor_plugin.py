"""supervisord's `whin` rpcinterface: add programs in O(1), list slot programs compactly, stop
equal priorities together.

Loaded by supervisord itself (it runs with the venv's python), from supervisord.conf:

    [rpcinterface:whin]
    supervisor.rpcinterface_factory = controlplane.supervisor_plugin:make_rpcinterface
    conf_dir = <the folder [include] reads the slot programs from>

Three things supervisord 4.3.0 does that cost more with every slot:

- ``reloadConfig`` re-parses every ``conf.d/*.conf`` to add one program. ``whin.addPrograms(names)``
  parses only the named files, with supervisor's own parser and the same expansions, and records
  each group where reloadConfig would have, so a later ``supervisorctl update`` finds nothing to do.
- ``getAllProcessInfo`` answers 15 fields per program in XML (about 200 KB for 500 slots), which
  supervisord's HTTP server writes out in many turns of its loop, each turn walking every program,
  and which the reconciler asks for every few seconds. ``whin.slotPrograms(prefix)`` answers the two
  facts the reconciler needs, for the programs whose name starts with ``prefix``, as one JSON string.
- Its shutdown stops one group at a time, waiting for each, and each slot is a group of its own:
  200 slots stopped one after another. Here every group of one priority is stopped at once
  (priority order is kept between priorities); each process keeps its stopwaitsecs and SIGKILL.

All three lean on supervisord's internals (Supervisor.ordered_stop_groups_phase_1/2, stop_groups,
process_groups, ServerOptions.process_groups_from_parser, a process's laststart): supervisor is pinned
at 4.3.0 in setup.cfg for that reason, and tests/controlplane/test_supervisor_plugin.py checks each
against a real supervisord.
Only supervisor's modules are imported: this runs inside supervisord.
"""

import configparser
import json
import os
import re
import time

from supervisor.options import UnhosedConfigParser
from supervisor.states import RUNNING_STATES, SupervisorStates, getProcessStateDescription
from supervisor.xmlrpc import Faults, RPCError

# A program name that is also a safe file name in conf_dir: no path, no hidden or temp file.
_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")


def make_rpcinterface(supervisord, conf_dir: str):
    stop_equal_priorities_together(supervisord)
    return WhinRPCInterface(supervisord, conf_dir)


class WhinRPCInterface:
    def __init__(self, supervisord, conf_dir: str):
        self.supervisord = supervisord
        self.conf_dir = os.path.join(supervisord.options.here or ".", conf_dir)  # absolute stays absolute
        # name -> index in options.process_group_configs, for the list object it was built from:
        # reloadConfig replaces that list, and the index is then rebuilt once.
        self._index: dict[str, int] = {}
        self._indexed = None

    def addPrograms(self, names):  # an XML-RPC method, named like supervisor's own
        """ Add the programs conf_dir/<name>.conf define, reading only those files.

        Already added programs are left as they are.

        @param array names   program names, one file each
        @return array added  the names added by this call
        """
        if self.supervisord.options.mood < SupervisorStates.RUNNING:
            raise RPCError(Faults.SHUTDOWN_STATE)
        # Every file parsed before any is added: one bad file adds nothing.
        configs = [self._parse(name) for name in dict.fromkeys(names)
                   if name not in self.supervisord.process_groups]
        for config in configs:
            self._remember(config)
            self.supervisord.add_process_group(config)
        return [config.name for config in configs]

    def slotPrograms(self, prefix):  # an XML-RPC method, named like supervisor's own
        """ The state of every program named prefix..., and how long ago each running one was started.

        Only programs alone in a group of their own name, as slot programs are.

        @param string prefix   the start of the names (slot-)
        @return string         JSON: {"<name>": ["<state name>", <seconds since its start or null>]}
        """
        now = time.time()
        programs = {}
        for name, group in self.supervisord.process_groups.items():
            process = group.processes.get(name) if name.startswith(prefix) else None
            if process is None or len(group.processes) != 1:
                continue
            state = process.get_state()
            running = state in RUNNING_STATES and process.laststart
            programs[name] = [getProcessStateDescription(state), max(0.0, now - process.laststart) if running else None]
        return json.dumps(programs, separators=(",", ":"))

    def _parse(self, name: str):
        """The group config reloadConfig would make of conf_dir/<name>.conf (options.read_config)."""
        if not isinstance(name, str) or not _NAME.fullmatch(name):
            raise RPCError(Faults.BAD_NAME, repr(name))
        path = os.path.join(self.conf_dir, f"{name}.conf")
        if not os.path.isfile(path):
            raise RPCError(Faults.BAD_NAME, f"{name}: no {path}")
        options = self.supervisord.options
        parser = UnhosedConfigParser()
        parser.expansions = options.environ_expansions  # ENV_*, [supervisord] environment's too
        try:
            parser.read(path)
            parser.expand_here(os.path.abspath(os.path.dirname(path)))
            groups = options.process_groups_from_parser(parser)
        except (configparser.Error, ValueError) as why:
            raise RPCError(Faults.CANT_REREAD, f"{path}: {why}") from None
        if [group.name for group in groups] != [name]:
            raise RPCError(Faults.CANT_REREAD, f"{path} must define [program:{name}] and nothing else")
        environment = options.configroot.supervisord.environment
        for process in groups[0].process_configs:  # as read_config does: [supervisord]'s, then its own
            merged = dict(environment)
            merged.update(process.environment)
            process.environment = merged
        return groups[0]

    def _remember(self, config) -> None:
        # Where reloadConfig keeps it, so that its next diff_to_active sees this group unchanged.
        configs = self.supervisord.options.process_group_configs
        if configs is not self._indexed:
            self._index = {c.name: i for i, c in enumerate(configs)}
            self._indexed = configs
        at = self._index.get(config.name)
        if at is None:
            self._index[config.name] = len(configs)
            configs.append(config)
        else:
            configs[at] = config


def stop_equal_priorities_together(supervisord) -> None:
    """Replace supervisord's one-group-at-a-time shutdown (supervisor 4.3.0, Supervisor.runforever:
    phase 1 asks the last of stop_groups, sorted by priority, to stop; phase 2 pops it once stopped)
    with the same for every group of that last priority at once."""

    def phase_1():
        groups = supervisord.stop_groups
        if groups:
            for group in groups[_last_priority_start(groups):]:
                group.stop_all()

    def phase_2():
        groups = supervisord.stop_groups
        if groups:
            start = _last_priority_start(groups)
            # Not list.remove: process groups compare equal by priority alone.
            groups[start:] = [group for group in groups[start:] if group.get_unstopped_processes()]

    supervisord.ordered_stop_groups_phase_1 = phase_1
    supervisord.ordered_stop_groups_phase_2 = phase_2


def _last_priority_start(groups) -> int:
    """Where the run of groups sharing the last group's priority starts (groups sorted by priority)."""
    priority = groups[-1].config.priority
    start = len(groups) - 1
    while start > 0 and groups[start - 1].config.priority == priority:
        start -= 1
    return start
