# layerbuild's Ansible callback: one JSON line per task start and per task
# result, appended to the file LAYERBUILD_EVENTS names, so a build can show
# each task as it runs and lead a failure report with the failed task (its
# name, role, file:line and message) without reading Ansible's text output.
# It prints nothing; the stdout callback (and the build log) are unchanged.
# Results of `no_log` tasks arrive censored by Ansible.
from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = """
    name: layerbuild_events
    type: notification
    short_description: task events for layerbuild
    description:
      - Appends one JSON line per task start and result to $LAYERBUILD_EVENTS.
"""

import json
import os
import time

from ansible.plugins.callback import CallbackBase


class CallbackModule(CallbackBase):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "notification"
    CALLBACK_NAME = "layerbuild_events"
    CALLBACK_NEEDS_ENABLED = False
    CALLBACK_NEEDS_WHITELIST = False

    def __init__(self):
        super(CallbackModule, self).__init__()
        path = os.environ.get("LAYERBUILD_EVENTS")
        self._out = open(path, "a") if path else None
        self._started = {}

    def _emit(self, event):
        if self._out is None:
            return
        event["t"] = round(time.time(), 3)
        self._out.write(json.dumps(event, default=str) + "\n")
        self._out.flush()

    @staticmethod
    def _task(task):
        role = getattr(task, "_role", None)
        return {
            "name": task.get_name(),
            "role": role.get_name() if role else None,
            "path": task.get_path(),
        }

    def _start(self, task, handler):
        self._started[task._uuid] = time.time()
        event = {"event": "task", "handler": handler}
        event.update(self._task(task))
        self._emit(event)

    def v2_playbook_on_task_start(self, task, is_conditional):
        self._start(task, False)

    def v2_playbook_on_handler_task_start(self, task):
        self._start(task, True)

    def _result(self, status, result, ignored=False):
        task = result._task
        r = result._result if isinstance(result._result, dict) else {}
        event = {"event": "result", "status": status, "ignored": bool(ignored)}
        event.update(self._task(task))
        start = self._started.get(task._uuid)
        if start is not None:
            event["duration"] = round(time.time() - start, 3)
        if status in ("failed", "unreachable"):
            # A loop's result: the first failed item says more than
            # "One or more items failed".
            for item in r.get("results") or []:
                if isinstance(item, dict) and item.get("failed"):
                    r = item
                    break
            for key in ("msg", "stderr", "stdout", "rc", "module_stderr"):
                value = r.get(key)
                if value not in (None, ""):
                    event[key] = value
        self._emit(event)

    def v2_runner_on_ok(self, result):
        changed = isinstance(result._result, dict) and result._result.get("changed")
        self._result("changed" if changed else "ok", result)

    def v2_runner_on_failed(self, result, ignore_errors=False):
        self._result("failed", result, ignored=ignore_errors)

    def v2_runner_on_skipped(self, result):
        self._result("skipped", result)

    def v2_runner_on_unreachable(self, result):
        self._result("unreachable", result)
