# Flow builder (contract §8): defines oxg_proxy_flow.
