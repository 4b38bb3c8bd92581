{{/*
Fixed security contexts for the chart's own pods (operator, console). Values may only pick non-root ids
(and supplementalGroups / fsGroupChangePolicy); every other field is set here whatever the values say, so
even `--skip-schema-validation` cannot loosen a pod. The schema refuses loosening values with a message.
Call with (dict "values" <podSecurityContext or securityContext> "what" "<values path>").
*/}}
{{- define "livenexus.podSecurityContext" -}}
{{- $sc := pick (deepCopy (.values | default dict)) "runAsUser" "runAsGroup" "fsGroup" "supplementalGroups" "fsGroupChangePolicy" -}}
{{- range $k := list "runAsUser" "runAsGroup" "fsGroup" -}}
{{- if and (hasKey $sc $k) (lt (int (get $sc $k)) 1) -}}
{{- fail (printf "%s.%s must be a non-root id (>= 1)" $.what $k) -}}
{{- end -}}
{{- end -}}
{{- $_ := set $sc "runAsNonRoot" true -}}
{{- $_ := set $sc "seccompProfile" (dict "type" "RuntimeDefault") -}}
{{- toYaml $sc -}}
{{- end -}}

{{- define "livenexus.containerSecurityContext" -}}
{{- $sc := pick (deepCopy (.values | default dict)) "runAsUser" "runAsGroup" -}}
{{- range $k := list "runAsUser" "runAsGroup" -}}
{{- if and (hasKey $sc $k) (lt (int (get $sc $k)) 1) -}}
{{- fail (printf "%s.%s must be a non-root id (>= 1)" $.what $k) -}}
{{- end -}}
{{- end -}}
{{- $_ := set $sc "allowPrivilegeEscalation" false -}}
{{- $_ := set $sc "readOnlyRootFilesystem" true -}}
{{- $_ := set $sc "runAsNonRoot" true -}}
{{- $_ := set $sc "privileged" false -}}
{{- $_ := set $sc "capabilities" (dict "drop" (list "ALL")) -}}
{{- $_ := set $sc "seccompProfile" (dict "type" "RuntimeDefault") -}}
{{- toYaml $sc -}}
{{- end -}}
