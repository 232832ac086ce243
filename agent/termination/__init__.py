"""Knowing the host is about to die: cloud termination notice watchers.

Each watcher polls its platform's metadata service with short timeouts and reports a notice
once: EC2 (IMDSv2: spot ``instance-action`` and ASG ``target-lifecycle-state``), GCP
(``instance/preempted`` with wait-for-change) and Azure (Scheduled Events ``Preempt`` /
``Terminate``). "auto" enables a watcher when the DMI data in /sys says the host runs on that
platform, so a laptop or an on-premises host spends nothing. A watcher that cannot reach its
metadata service on the first try turns itself off: a missing service costs one ``timeout``,
once, and never delays start-up (watchers run as their own tasks). Answers are read up to 64
KiB, redirects are not followed (the IMDSv2 token stays with the service), an EC2 action keeps
only its documented keys, and an Azure event that names its resources counts only if it names
this VM (every VM of an availability set or scale-set placement group sees the others'). An
answer that is not one, or any other failure of a poll, is logged and the next poll tried: a
watcher never ends the agent.

A notice becomes a ``notice`` record and switches the agent into drain mode early; the host's
SIGTERM (systemd, kubelet) still ends the run with the final sweep and the seal.
"""
