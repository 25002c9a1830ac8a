# Whether Mitogen can serve layerbuild's mitogen_chroot connection (read
# once per play by the connection and the strategies; says why not once).
from __future__ import absolute_import, division, print_function
__metaclass__ = type

import os
import sys

import ansible.release
from ansible.utils.display import Display

#: The ansible-core versions layerbuild runs Mitogen with.
SUPPORTED = ((2, 10), (2, 18))


def mitogen_unusable():
    """Why Mitogen cannot serve this play, or None."""
    v = tuple(int(x) for x in ansible.release.__version__.split('.')[:2])
    if not SUPPORTED[0] <= v <= SUPPORTED[1]:
        return 'ansible-core %s is not one layerbuild runs Mitogen with (%d.%d to %d.%d)' % (
            ansible.release.__version__, SUPPORTED[0][0], SUPPORTED[0][1],
            SUPPORTED[1][0], SUPPORTED[1][1])
    try:
        import ansible_mitogen  # noqa: F401 (on sys.path once the strategy loaded)
    except ImportError:
        # Loaded before the strategy (plugin listing): find ansible_mitogen
        # from the strategy plugin path, .../ansible_mitogen/plugins/strategy.
        from ansible import constants as C
        for p in C.DEFAULT_STRATEGY_PLUGIN_PATH:
            d = os.path.abspath(os.path.join(p, '..', '..', '..'))
            if os.path.isdir(os.path.join(d, 'ansible_mitogen')):
                sys.path.insert(0, d)
                break
        try:
            import ansible_mitogen  # noqa: F401
        except ImportError as e:
            return 'Mitogen is not installed where layerbuild looks (%s): %s' % (
                os.environ.get('LAYERBUILD_MITOGEN', '/usr/local/lib/layerbuild/mitogen'), e)
    return None


UNUSABLE = mitogen_unusable()

if UNUSABLE is not None:
    Display().warning('layerbuild: %s; the play runs over community.general.chroot '
                      '(slower; scripts/install-deps.sh installs Mitogen)' % UNUSABLE)
