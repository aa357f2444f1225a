{{/* The infergate container, as a list item: the only container in the default mode, the application's native sidecar in sidecar
mode (its APIs on loopback, its probes on the metrics port). */}}
{{- define "infergate.container" -}}
{{- $probePort := ternary "metrics" "http" .Values.sidecar.enabled -}}
- name: infergate
  image: "{{ .Values.image.repository }}:{{ .Values.image.tag }}"
  imagePullPolicy: {{ .Values.image.pullPolicy }}
  {{- if .Values.sidecar.enabled }}
  restartPolicy: Always
  {{- end }}
  args: ["serve", "--config", "/etc/infergate/infergate.toml"]
  ports:
    {{- if not .Values.sidecar.enabled }}
    - name: http
      containerPort: 8000
    - name: grpc
      containerPort: 8001
    {{- end }}
    - name: metrics
      containerPort: 8002
  env:
    {{- if .Values.sidecar.enabled }}
    # The APIs answer the application on the pod's loopback only; the metrics port (which also answers the
    # health routes) stays on the pod's address for the probes and Prometheus.
    - name: INFERGATE_HTTP_HOST
      value: "127.0.0.1"
    - name: INFERGATE_GRPC_HOST
      value: "127.0.0.1"
    # And on Unix sockets in the `sockets` volume, which the application mounts to skip the TCP stack.
    - name: INFERGATE_HTTP_SOCKET
      value: /run/infergate/http.sock
    - name: INFERGATE_GRPC_SOCKET
      value: /run/infergate/grpc.sock
    {{- if .Values.sidecar.sharedMemory.enabled }}
    # Triton's system shared memory, in the `shm` volume the application mounts at /dev/shm too.
    - name: INFERGATE_SHARED_MEMORY
      value: "true"
    {{- end }}
    {{- end }}
    # The pod and namespace, as resource attributes of the exported spans (otlp_endpoint in config.server).
    - name: POD_NAME
      valueFrom:
        fieldRef:
          fieldPath: metadata.name
    - name: POD_NAMESPACE
      valueFrom:
        fieldRef:
          fieldPath: metadata.namespace
    - name: INFERGATE_ADMIN_TOKEN
      valueFrom:
        secretKeyRef:
          name: {{ .Values.secretName }}
          key: admin-token
          optional: true
    - name: MLFLOW_TRACKING_TOKEN
      valueFrom:
        secretKeyRef:
          name: {{ .Values.secretName }}
          key: mlflow-token
          optional: true
  startupProbe:
    httpGet:
      path: /v2/health/ready
      port: {{ $probePort }}
    periodSeconds: 5
    failureThreshold: {{ .Values.startupFailureThreshold }}
  readinessProbe:
    httpGet:
      path: /v2/health/ready
      port: {{ $probePort }}
    periodSeconds: 5
    failureThreshold: 2
  livenessProbe:
    httpGet:
      path: /v2/health/live
      port: {{ $probePort }}
    periodSeconds: 10
    failureThreshold: 3
  lifecycle:
    preStop:
      exec:
        command: ["sleep", "{{ .Values.preStopSeconds }}"]
  resources:
    {{- toYaml .Values.resources | nindent 4 }}
  securityContext:
    allowPrivilegeEscalation: false
    readOnlyRootFilesystem: true
    capabilities:
      drop: ["ALL"]
  volumeMounts:
    - name: config
      mountPath: /etc/infergate/infergate.toml
      subPath: infergate.toml
      readOnly: true
    {{- range $model, $toml := .Values.config.models }}
    - name: config
      mountPath: /opt/infergate/models/{{ $model }}/model.toml
      subPath: {{ $model }}.model.toml
      readOnly: true
    {{- end }}
    - name: state
      mountPath: /var/lib/infergate
    - name: tmp
      mountPath: /tmp
    {{- if .Values.sidecar.enabled }}
    - name: sockets
      mountPath: /run/infergate
    {{- if .Values.sidecar.sharedMemory.enabled }}
    - name: shm
      mountPath: /dev/shm
    {{- end }}
    {{- end }}
{{- end -}}
