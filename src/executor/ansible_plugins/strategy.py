# Ansible's builtin `STRATEGY` strategy with Mitogen's mixin (as
# mitogen_STRATEGY), under the builtin name, so that a play's own `strategy:`
# keyword keeps Mitogen (layerbuild's mitogen_chroot connection works only
# under a Mitogen strategy). The builtin itself when Mitogen cannot serve
# (the connection then is community.general.chroot and says why).
from __future__ import absolute_import, division, print_function
__metaclass__ = type

import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', 'layerbuild_mitogen'))
from layerbuild_mitogen_check import UNUSABLE  # noqa: E402

if UNUSABLE is None:
    import ansible_mitogen.loaders
    import ansible_mitogen.strategy

    Base = ansible_mitogen.loaders.strategy_loader.get('ansible.builtin.STRATEGY', class_only=True)

    class StrategyModule(ansible_mitogen.strategy.StrategyMixin, Base):
        pass
else:
    # Not `from ansible.plugins.strategy.STRATEGY import ...`: this file is
    # loaded under that very name.
    from ansible.plugins.loader import strategy_loader

    StrategyModule = strategy_loader.get('ansible.builtin.STRATEGY', class_only=True)
