"""chartbench: a synthetic chart benchmark with exact answers, and a programmatic teacher.

Bar and line charts drawn with Pillow from known data (charts.py); questions with exact answers
(questions.py); seeded ITEMS.jsonl + images in the stagewise format (bench.py); the four-stage trace
a perfect model would write (teacher.py, the role GPT-4o plays in LLaVA-CoT); wrong versions of a
stage (corrupt.py); judge and reasoning pre-check examples rendered with the project's own judge
prompts (judging.py); the training file for `stagewise train` (trainset.py); the untrained base
model with a tokenizer fitted to these prompts (base.py). Only Pillow and the standard library are
imported at the top of every module except base.py, so all of it but base.py runs without torch.
"""
