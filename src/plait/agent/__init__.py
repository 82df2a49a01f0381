"""The agent beside each Envoy (``plait agent``, Istio's pilot-agent): bootstrap, supervision, readiness, drain.

Flows in: the proxy's identity and settings (`run.AgentConfig`: mode, name,
namespace, IP, labels, service account, control-plane address, ports, state
directory, optional app command, and optionally `run.IdentitySettings`: the
pod's token file, the CA's address and root, the certificate lifetime) and,
at run time, signals (SIGTERM/SIGINT stop the agent; with an app,
SIGHUP/SIGUSR1/SIGUSR2 are forwarded to it).

Flows out: an Envoy bootstrap file (`bootstrap`, pure) whose node id and
metadata let the control plane rebuild the `plait.model.Proxy`; a running
Envoy talking ADS to the control plane (`supervisor`), its log on the
agent's stderr prefixed ``[envoy]``, its PID in ``STATE_DIR/envoy.pid``;
``/healthz/ready`` and ``/stats/prometheus`` on the status port (`status`,
`readiness`); the app's exit status as the agent's own (`app`). With an
identity: a CSR to the CA and a certificate renewed at half life
(`identity`), served to Envoy as the ``default`` and ``ROOTCA`` secrets over
SDS on ``STATE_DIR/proxy/sds.sock`` (`sds`), before Envoy is started.

Who owns state: `run.Agent` owns the run (draining flag, app process, stop
event); `supervisor.EnvoySupervisor` owns the Envoy process and restarts it;
`identity.CertificateManager` owns the current certificate and its private
key (in memory only) and hands each new one to `sds.SdsServer`, which holds
the per-stream SDS state; nothing else holds state. Envoy's config state
lives in Envoy and is read through its admin API (`admin`) on demand.

What may block: nothing blocks the event loop. Admin requests and status
clients have timeouts; waits for readiness, for the app and for Envoy's exit
are cancellable and bounded (a process that ignores SIGTERM gets SIGKILL).
CA calls have a 10 s timeout and are retried with backoff (0.5 s to 30 s).
Children are started from the event-loop thread with PR_SET_PDEATHSIG, so
Envoy (SIGKILL) and the app (SIGTERM) do not outlive an agent that is killed.
"""
