"""The Ray roles: one module each (generator, judge, learner, buffer). Installed as raylign.actors."""
