# Scope policy loader (contract §9): defines oxg_proxy_scope.
