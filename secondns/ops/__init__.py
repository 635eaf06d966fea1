"""Operating the server: HTTP (``httpapi``: /metrics, /status, control), the Prometheus
collector (``metrics``), systemd notification (``sdnotify``) and logging (``logsetup``)."""
