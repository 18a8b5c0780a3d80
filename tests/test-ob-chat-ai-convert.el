;;; test-ob-chat-ai-convert.el --- Markdown to Org, case by case  -*- lexical-binding: t; -*-

;;; Commentary:

;; The converter is a pure function of its input, so these tests call it
;; directly: each case is Markdown in, Org out, converted whole and also
;; fed in pieces cut at every position, as a stream would cut it.

;;; Code:

(require 'ert)
(require 'ob-chat-ai-convert)

(defconst ob-chat-ai-convert-test-cases
  '(("# Title\n## Part\ntext" 1
     "** Title\n*** Part\ntext")
    ("```js\nconst a = 1;\n```\n" 0
     "#+begin_src js\nconst a = 1;\n#+end_src\n")
    ("```shell\nls -l\n```" 0
     "#+begin_src sh\nls -l\n#+end_src")
    ("```Python\nprint(1)\n```\n```\nplain\n```\n" 0
     "#+begin_src python\nprint(1)\n#+end_src\n#+begin_example\nplain\n#+end_example\n")
    ("```org\n* Heading\n#+begin_src emacs-lisp\n(+ 1 2)\n#+end_src\n,#+keep\n```\n" 0
     "#+begin_src org\n,* Heading\n,#+begin_src emacs-lisp\n(+ 1 2)\n,#+end_src\n,,#+keep\n#+end_src\n")
    ("````markdown\n```python\nx = 1\n```\n````\nafter" 0
     "#+begin_src markdown\n```python\nx = 1\n```\n#+end_src\nafter")
    ("Use **bold**, *italic*, _also italic_, `code`, `a~b` and ~~gone~~." 0
     "Use *bold*, /italic/, /also italic/, ~code~, =a~b= and +gone+.")
    ("snake_case_name and 2*3*4 stay; `**not bold**` too" 0
     "snake_case_name and 2*3*4 stay; ~**not bold**~ too")
    ("See [the manual](https://orgmode.org/manual/) now." 0
     "See [[https://orgmode.org/manual/][the manual]] now.")
    ("- one\n* two\n  + nested **b**\n1. first" 0
     "- one\n- two\n  - nested *b*\n1. first")
    ("> quoted\n---\nend" 0
     ": quoted\n-----\nend")
    ("The reply ends with\n#+end_src\nin plain text" 0
     "The reply ends with\n,#+end_src\nin plain text")
    ("```python\nunclosed = True" 0
     "#+begin_src python\nunclosed = True\n#+end_src")
    ("日本語の**太字**と`コード`" 0
     "日本語の*太字*と~コード~"))
  "Markdown, the heading level the reply goes under, and the Org expected.")

(ert-deftest ob-chat-ai-convert-test-cases-whole ()
  (pcase-dolist (`(,markdown ,level ,org) ob-chat-ai-convert-test-cases)
    (should (equal (ob-chat-ai-convert-markdown markdown level) org))))

(ert-deftest ob-chat-ai-convert-test-cases-cut-at-every-position ()
  (pcase-dolist (`(,markdown ,level ,org) ob-chat-ai-convert-test-cases)
    (dotimes (cut (1+ (length markdown)))
      (let ((converter (ob-chat-ai-convert-create level)))
        (should (equal (concat (ob-chat-ai-convert-feed converter (substring markdown 0 cut))
                               (ob-chat-ai-convert-feed converter (substring markdown cut))
                               (ob-chat-ai-convert-finish converter))
                       org))))))

(ert-deftest ob-chat-ai-convert-test-fed-one-character-at-a-time ()
  (pcase-dolist (`(,markdown ,level ,org) ob-chat-ai-convert-test-cases)
    (let ((converter (ob-chat-ai-convert-create level)))
      (should (equal (concat (mapconcat (lambda (char)
                                          (ob-chat-ai-convert-feed converter (string char)))
                                        markdown "")
                             (ob-chat-ai-convert-finish converter))
                     org)))))

(provide 'test-ob-chat-ai-convert)

;;; test-ob-chat-ai-convert.el ends here
