from sam3tune.cli import main

raise SystemExit(main())
