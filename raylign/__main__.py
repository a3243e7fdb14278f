from raylign.cli import main

raise SystemExit(main())
