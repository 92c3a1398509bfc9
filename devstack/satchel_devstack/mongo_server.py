"""nx-27017 with its per-command INFO logging turned down to warnings.

nx-27017 calls logging.basicConfig(INFO) itself; configuring the root logger first makes that
call a no-op. Arguments are nx-27017's own.
"""
import logging
import os

from nx_27017.nx_27017 import main

if __name__ == "__main__":
    logging.basicConfig(
        level=os.environ.get("MONGO_LOG_LEVEL", "WARNING"),
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
    )
    main()
