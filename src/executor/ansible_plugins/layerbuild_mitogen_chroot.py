# The Mitogen side of layerbuild's `mitogen_chroot` connection (imported by
# it once Mitogen is known to serve).
from __future__ import absolute_import, division, print_function
__metaclass__ = type

import os

import ansible.errors

import ansible_mitogen.connection as _mconnection
import ansible_mitogen.planner as _planner
import ansible_mitogen.plugins.connection.mitogen_local as _local

#: In-root interpreters tried when ansible_python_interpreter is not an
#: absolute path (unset, auto, auto_silent...).
_FALLBACK = ('/usr/bin/python3', '/usr/libexec/platform-python', '/usr/bin/python3.12',
             '/usr/bin/python3.11', '/usr/bin/python3.10', '/usr/bin/python3.9',
             '/usr/bin/python3.8', '/usr/bin/python3.7', '/usr/bin/python3.6')


def _in_root(root, path, depth=0):
    """`path` of the root as the host sees it, symlinks resolved inside the
    root; None when it does not exist there."""
    parts = [p for p in path.split('/') if p]
    cur = '/'
    while parts:
        p = parts.pop(0)
        nxt = os.path.join(cur, p)
        host = os.path.join(root, nxt.lstrip('/'))
        if os.path.islink(host):
            if depth > 40:
                return None
            t = os.readlink(host)
            t = t if t.startswith('/') else os.path.join(cur, t)
            return _in_root(root, '/'.join([t] + parts), depth + 1)
        if not os.path.lexists(host):
            return None
        cur = os.path.normpath(nxt)
    return os.path.join(root, cur.lstrip('/'))


def root_python(root, configured):
    """The interpreter, a path inside the root: ansible_python_interpreter
    when it is an absolute path (as the plain chroot connection reads it),
    else the first of _FALLBACK present; None when the root has none."""
    if configured and configured.startswith('/') and ' ' not in configured:
        return configured if _in_root(root, configured) else None
    for p in _FALLBACK:
        if _in_root(root, p):
            return p
    return None


def _connect_chroot(spec):
    root = spec.remote_addr()
    configured = spec._task_vars.get('ansible_python_interpreter')
    if not isinstance(configured, str) or '{' in configured:
        configured = None
    python = root_python(root, configured)
    if python is None:
        raise ansible.errors.AnsibleConnectionFailure(
            'mitogen_chroot: no Python interpreter in %s (%s): use the '
            'community.general.chroot connection' % (root, configured or ', '.join(_FALLBACK)))
    return {
        'method': 'local',
        'kwargs': {
            # Always inside the root, whatever ansible_python_interpreter
            # says; SIGINT back to its default (Mitogen's multiplexer
            # ignores it, and what the interpreter starts would inherit
            # that and outlive an interrupted play).
            'python_path': ['/usr/bin/env', '--default-signal=INT', '/usr/sbin/chroot', root, python],
        },
    }


_mconnection.CONNECTION_METHOD['mitogen_chroot'] = _connect_chroot


class Connection(_local.Connection):
    transport = 'mitogen_chroot'

    def get_default_cwd(self):
        return '/'

    def get_good_temp_dir(self):
        """Called for module tasks and action plugins' temp dirs (not raw).
        With ANSIBLE_REMOTE_TMP=/dev/shm (the private tmpfs), Mitogen itself leaves nothing in the
        root (it would otherwise create ~/.ansible 0755 at connect, even for
        raw-only plays); this makes ~/.ansible/tmp as the plain chroot
        connection does before its first module (`umask 77 && mkdir -p`):
        both 0700, so the trees are identical."""
        home = self.init_child_result['home_dir'] if self.init_child_result else None
        if home is None:
            self._connect()
            home = self.init_child_result['home_dir']
        chain = self.get_chain()
        for d in (os.path.join(home, '.ansible'), os.path.join(home, '.ansible', 'tmp')):
            if not chain.call(os.path.isdir, d):
                chain.call(os.mkdir, d, 0o700)
        return super(Connection, self).get_good_temp_dir()


# The umask this play's tasks start with: the one a module run over the
# plain chroot connection inherits (a process of its own per task).
_UMASK = os.umask(0o022)
os.umask(_UMASK)


def _invoke(invocation, _invoke=_planner.invoke):
    """Runs a module task (Mitogen's planner.invoke), then gives the root's
    interpreter back the play's umask: a module run in it that sets its own
    (git's `umask:`, cron's 022) would otherwise set it for every later
    task of the play, and what they create would get other modes than over
    the chroot connection."""
    try:
        return _invoke(invocation)
    finally:
        conn = invocation.connection
        if isinstance(conn, Connection) and conn.context is not None:
            try:
                conn.get_chain().call(os.umask, _UMASK)
            except Exception:  # the task's own error, if any, says more
                pass


_planner.invoke = _invoke


# Modules that respawn themselves under another interpreter when their
# Python bindings are missing (apt installs python3-apt, then respawns):
# Ansible's respawn runs the module's AnsiballZ payload in a new process,
# which Mitogen (modules run in its persistent interpreter, no payload) does
# not have: "module '__main__' has no attribute '_module_fqn'" (Mitogen issue
# #849). When the interpreter found is this one, run the module again here,
# marked as respawned, as the new process would.
_RESPAWN_SHIM = b'''
def _mitogen_respawn_module(interpreter):
    import importlib, os, sys, types
    if os.path.realpath(interpreter) != os.path.realpath(sys.executable):
        raise RuntimeError('cannot respawn the module under %s: Mitogen runs it in %s'
                           % (interpreter, sys.executable))
    importlib.invalidate_caches()
    try:
        # The new process would start without this one's warnings.
        from ansible.module_utils.common import warnings as _w
        del _w._global_warnings[:]
        del _w._global_deprecations[:]
    except (ImportError, AttributeError):
        pass
    g = globals()
    f = sys._getframe()
    while f is not None and not (f.f_globals is g and f.f_code.co_name == '<module>'):
        f = f.f_back
    old = sys.modules['__main__']
    new = types.ModuleType('__main__')
    for k in ('__package__', '__file__', '__spec__', 'ansible_mitogen_injected_router'):
        if hasattr(old, k):
            setattr(new, k, getattr(old, k))
    new._respawned = True
    sys.modules['__main__'] = new
    exec(f.f_code, vars(new))
    raise SystemExit(0)

'''


def _respawn_in_process(fullname, path, source, is_pkg):
    import re
    if b'respawn_module(' in source and b'\ndef main():\n' in source:
        source = re.sub(br'(?<![\w.])respawn_module\(', b'_mitogen_respawn_module(', source)
        source = source.replace(b'\ndef main():\n', _RESPAWN_SHIM + b'\ndef main():\n', 1)
    return (path, source, is_pkg)


def _register_modifiers():
    import ansible_mitogen._modifiers as m
    for name in ('apt', 'apt_repository', 'package_facts', 'yum'):
        for full in (name, 'ansible.builtin.' + name, 'ansible.legacy.' + name):
            mods = m._ANSIBLE_MODULE_MODIFIERS.setdefault(full, [])
            if _respawn_in_process not in mods:
                mods.append(_respawn_in_process)


_register_modifiers()
