"""The agent beside each Envoy (``plait agent``, Istio's pilot-agent): bootstrap, supervision, readiness, drain.

Flows in: the proxy's identity and settings (`run.AgentConfig`: mode, name,
namespace, IP, labels, service account, control-plane address, ports, state
directory, optional app command) and, at run time, signals (SIGTERM/SIGINT
stop the agent; with an app, SIGHUP/SIGUSR1/SIGUSR2 are forwarded to it).

Flows out: an Envoy bootstrap file (`bootstrap`, pure) whose node id and
metadata let the control plane rebuild the `plait.model.Proxy`; a running
Envoy talking ADS to the control plane (`supervisor`), its log on the
agent's stderr prefixed ``[envoy]``, its PID in ``STATE_DIR/envoy.pid``;
``/healthz/ready`` and ``/stats/prometheus`` on the status port (`status`,
`readiness`); the app's exit status as the agent's own (`app`).

Who owns state: `run.Agent` owns the run (draining flag, app process, stop
event); `supervisor.EnvoySupervisor` owns the Envoy process and restarts it;
nothing else holds state. Envoy's config state lives in Envoy and is read
through its admin API (`admin`) on demand.

What may block: nothing blocks the event loop. Admin requests and status
clients have timeouts; waits for readiness, for the app and for Envoy's exit
are cancellable and bounded (a process that ignores SIGTERM gets SIGKILL).
Children are started from the event-loop thread with PR_SET_PDEATHSIG, so
Envoy (SIGKILL) and the app (SIGTERM) do not outlive an agent that is killed.
"""
