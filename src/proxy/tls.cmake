# Interception CA and leaf certificates: defines oxg_proxy_tls.
