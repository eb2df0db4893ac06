"""nbgrader configuration for instructors running nbgrader in this checkout.

solutions/ is nbgrader's source directory and lessons/ its release directory.
Regenerate lessons/ with `gptcore release` (or `make lessons`), not with
`nbgrader generate_assignment --force`: that deletes its target before it
writes, so a failure would leave a lesson missing. gptcore generates into a
temporary directory and swaps the result in.
"""

c = get_config()  # noqa: F821  (nbgrader injects get_config)

c.CourseDirectory.course_id = "how-gpt-works"
c.CourseDirectory.source_directory = "solutions"
c.CourseDirectory.release_directory = "lessons"
c.ClearSolutions.code_stub = {"python": "# YOUR CODE HERE\nraise NotImplementedError()"}
# Seconds per cell; every lesson runs in a few minutes on a 2-core CPU.
c.Execute.timeout = 120
