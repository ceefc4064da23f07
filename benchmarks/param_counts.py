"""Parameter counts of the configs (from shapes, no allocation).

  python benchmarks/param_counts.py            # every config in configs/
"""

import importlib
import pkgutil

import configs
from zaya_jax import ZayaConfig, count_params


def main():
  print("| config | total | non-embedding | active | active non-embedding |")
  print("|---|---:|---:|---:|---:|")
  for info in pkgutil.iter_modules(configs.__path__):
    cfg = importlib.import_module(f"configs.{info.name}").get_config()
    c = count_params(ZayaConfig.from_dict(cfg.model.to_dict()))
    print(f"| {info.name} | {c['total']:,} | {c['non_embedding']:,} | {c['active']:,} | "
          f"{c['active_non_embedding']:,} |")


if __name__ == "__main__":
  main()
