# layerbuild's `mitogen` connection (written into the build's work
# directory; see src/executor/ansible.rs): Mitogen's local connection whose
# persistent interpreter is started as `chroot ROOT PYTHON` (ROOT =
# ansible_host), modules and commands run from / (mitogen_local would chdir
# to the playbook's directory, a host path). One interpreter serves every
# task of the play, instead of one chroot, one sh and one Python per task
# step.
#
# When Mitogen cannot serve (not installed where layerbuild looks, or an
# ansible-core it is not known to support), this is the plain
# community.general.chroot connection, with a warning: the trees the two
# make are the same (tests/connection.rs compares them).
from __future__ import absolute_import, division, print_function
__metaclass__ = type

DOCUMENTATION = """
    name: mitogen_chroot
    short_description: run tasks in a chroot through one persistent Mitogen interpreter
    description:
      - Mitogen's local connection, its interpreter started as chroot ROOT PYTHON;
        community.general.chroot when Mitogen cannot serve.
    author: layerbuild
    options:
      remote_addr:
        description:
            - The path of the chroot you want to access.
        default: inventory_hostname
        vars:
            - name: inventory_hostname
            - name: ansible_host
      executable:
        description:
            - User specified executable shell
        ini:
          - section: defaults
            key: executable
        env:
          - name: ANSIBLE_EXECUTABLE
        vars:
          - name: ansible_executable
        default: /bin/sh
      chroot_exe:
        description:
            - User specified chroot binary
        ini:
          - section: chroot_connection
            key: exe
        env:
          - name: ANSIBLE_CHROOT_EXE
        vars:
          - name: ansible_chroot_exe
        default: chroot
"""

import os
import sys

# Its modules: in a directory of their own, beside the plugins' (Ansible
# takes every file of a plugin directory for a plugin).
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', 'layerbuild_mitogen'))
from layerbuild_mitogen_check import UNUSABLE  # noqa: E402

if UNUSABLE is not None:
    from ansible_collections.community.general.plugins.connection.chroot import (
        Connection as _Chroot,
    )

    class Connection(_Chroot):
        transport = 'mitogen_chroot'
else:
    from layerbuild_mitogen_chroot import Connection  # noqa: F401
