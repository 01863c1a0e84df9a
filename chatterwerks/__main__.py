from chatterwerks.cli import main

raise SystemExit(main())
