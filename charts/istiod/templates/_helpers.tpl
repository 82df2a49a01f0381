{{- define "istiod.name" -}}
{{- if .Values.revision }}istiod-{{ .Values.revision }}{{ else }}istiod{{ end -}}
{{- end }}

{{- define "istiod.rev" -}}
{{- .Values.revision | default "default" -}}
{{- end }}

{{- define "istiod.owned" -}}
app.kubernetes.io/managed-by: plait
install.operator.istio.io/owning-resource: {{ .Values.owner }}
operator.istio.io/component: Pilot
istio.io/rev: {{ include "istiod.rev" . }}
{{- end }}

{{- define "istiod.selector" -}}
app: istiod
istio.io/rev: {{ include "istiod.rev" . }}
{{- end }}

{{- define "istiod.discoveryAddress" -}}
{{- (.Values.meshConfig.defaultConfig | default dict).discoveryAddress | default (printf "%s.%s.svc:15012" (include "istiod.name" .) .Release.Namespace) -}}
{{- end }}
