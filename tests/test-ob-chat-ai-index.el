;;; test-ob-chat-ai-index.el --- ERT tests for the index of a buffer's chat-ai blocks  -*- lexical-binding: t; -*-

;;; Commentary:

;; A :session block sends what the earlier blocks of its session sent
;; and were answered, read from an index that follows the buffer's
;; changes (ob-chat-ai-index.el).  After each kind of edit a user can
;; make, and after its undo, what the index gives must be what a fresh
;; read of the whole buffer gives; the edits that touch a block or its
;; result only must be read where they are, the others make the whole
;; buffer be read again.  Blocks run through the real helper against
;; the loopback server, which reports the messages each request held.
;; Load after tests/test-ob-chat-ai.el.

;;; Code:

(require 'ert)
(unless (featurep 'test-ob-chat-ai)
  (load (expand-file-name "test-ob-chat-ai.el"
                          (file-name-directory (or load-file-name buffer-file-name)))
        nil t))

;;;; What the index says, and what a fresh read says

(defun ob-chat-ai-test-index-starts ()
  "Return where the buffer's chat-ai blocks start, as a parse of it finds them."
  (org-with-wide-buffer
   (org-element-map (org-element-parse-buffer 'element) 'src-block
     (lambda (block)
       (and (equal (org-element-property :language block) "chat-ai")
            (org-element-property :post-affiliated block))))))

(defun ob-chat-ai-test-index-view ()
  "Return what the index says of each chat-ai block of the buffer.
That is each block's session, and at each block and at the end of
the buffer, for sessions s and t: the blocks before, the history
with unfinished replies let through, and the history or the error
that refuses it."
  (org-with-wide-buffer
   (let ((starts (ob-chat-ai-test-index-starts)))
     (list starts
           (mapcar #'ob-chat-ai-messages-block-session starts)
           (mapcan (lambda (here)
                     (mapcar (lambda (session)
                               (list here session
                                     (ob-chat-ai-messages-session-blocks session here)
                                     (ob-chat-ai-messages-history session here #'ignore t)
                                     (condition-case err
                                         (ob-chat-ai-messages-history session here #'ignore)
                                       (user-error (cadr err)))))
                             '("s" "t")))
                   (append starts (list (point-max))))))))

(defun ob-chat-ai-test-index-check (how)
  "Check that the index says what a fresh read of the buffer says.
HOW is `kept' when the index must have read again only what
changed, `read' when it must have read the whole buffer again, nil
when either will do."
  (let ((state ob-chat-ai-index--state)
        (view (ob-chat-ai-test-index-view)))
    (pcase how
      ('kept (should (eq ob-chat-ai-index--state state)))
      ('read (should-not (eq ob-chat-ai-index--state state))))
    (should (equal view (let ((ob-chat-ai-index--state nil))
                          (ob-chat-ai-test-index-view))))))

(defun ob-chat-ai-test-index-replace (old new)
  "Replace the first OLD in the buffer with NEW."
  (goto-char (point-min))
  (search-forward old)
  (replace-match new t t))

(defun ob-chat-ai-test-index-goto (text)
  "Move point after the first TEXT in the buffer."
  (goto-char (point-min))
  (search-forward text))

(defun ob-chat-ai-test-index-undo ()
  "Undo the last edit."
  (let ((last-command nil))
    (undo))
  (undo-boundary))

;;;; Every kind of edit, against a fresh read

(defconst ob-chat-ai-test-index-document "* One
#+begin_src chat-ai :model m :session s :system \"Be brief.\"
First.
#+end_src

#+RESULTS:
: One.

#+name: second
#+begin_src chat-ai :model m :session s
Second.
#+end_src

#+RESULTS: second
: Two.

#+begin_src chat-ai :model m :session t
Other.
#+end_src

#+RESULTS:
:results:
Other answer.
:end:

* Two
:PROPERTIES:
:header-args:chat-ai: :session s :model m
:END:
#+begin_src chat-ai
Third.
#+end_src

#+RESULTS:
#+begin_example
Three
lines
here
#+end_example

Some notes.

#+begin_src python
print(1)
#+end_src

#+begin_src chat-ai :var x=\"v\"
With $x.
#+end_src

#+begin_src chat-ai
Last.
#+end_src
"
  "Blocks of sessions s and t, with results of each kind and header args inherited.")

(defconst ob-chat-ai-test-index-edits
  `(("typing in an earlier block's body" kept
     ,(lambda () (ob-chat-ai-test-index-goto "First")
        (dotimes (_ 3) (insert "!"))))
    ("a run replacing a result" kept
     ,(lambda () (ob-chat-ai-test-execute "^First") (ob-chat-ai-test-received 1)))
    ("a :system changed" kept
     ,(lambda () (ob-chat-ai-test-index-replace "Be brief." "Be terse.")))
    ("a block's language made chat-ai" kept
     ,(lambda () (ob-chat-ai-test-index-replace "_src python" "_src chat-ai :session t")))
    ("a :var changed" kept
     ,(lambda () (ob-chat-ai-test-index-replace "x=\"v\"" "x=\"w\"")))
    ("a #+name typed on the blank line above a block" kept
     ,(lambda () (ob-chat-ai-test-index-goto ": Two.\n")
        (insert "#+name: other")))
    ("a named block's result changed" kept
     ,(lambda () (ob-chat-ai-test-index-replace ": Two." ": Deux.")))
    ("an example block's result changed" kept
     ,(lambda () (ob-chat-ai-test-index-replace "Three" "Trois")))
    ("a drawer's result changed" kept
     ,(lambda () (ob-chat-ai-test-index-replace "Other answer." "Another answer.")))
    ("a result made unfinished" kept
     ,(lambda () (ob-chat-ai-test-index-replace "here\n#+end_example"
                                                "chat-ai error: HTTP 500\n#+end_example")))
    ("a result typed by hand" kept
     ,(lambda () (ob-chat-ai-test-index-replace "With $x.\n#+end_src\n"
                                                "With $x.\n#+end_src\n\n#+RESULTS:\n: typed\n")))
    ("the blank line before a result deleted" kept
     ,(lambda () (ob-chat-ai-test-index-replace "#+end_src\n\n#+RESULTS:\n:results:"
                                                "#+end_src\n#+RESULTS:\n:results:")))
    ("a blank line put between a block and its result" kept
     ,(lambda () (ob-chat-ai-test-index-replace "#+RESULTS:\n#+begin_example"
                                                "#+RESULTS:\n\n#+begin_example")))
    ("notes written between blocks" kept
     ,(lambda () (ob-chat-ai-test-index-replace "Some notes.\n" "Some notes.\nMore.\n")))
    ("a new block inserted between two" read
     ,(lambda () (ob-chat-ai-test-index-replace
                  "#+name: second"
                  "#+begin_src chat-ai :model m :session s\nNew.\n#+end_src\n\n#+name: second")))
    ("an earlier block deleted" read
     ,(lambda () (ob-chat-ai-test-index-replace
                  "#+name: second\n#+begin_src chat-ai :model m :session s\nSecond.
#+end_src\n\n#+RESULTS: second\n: Two.\n\n" "")))
    ("an #+end_src deleted" read
     ,(lambda () (ob-chat-ai-test-index-replace "First.\n#+end_src\n" "First.\n")))
    ("a block wrapped in an example block" read
     ,(lambda () (ob-chat-ai-test-index-replace "* One\n" "* One\n#+begin_example\n")
        (ob-chat-ai-test-index-replace ": One.\n" ": One.\n#+end_example\n")))
    ("a results drawer's :end: deleted" read
     ,(lambda () (ob-chat-ai-test-index-replace "Other answer.\n:end:\n" "Other answer.\n")))
    ("a property drawer added" read
     ,(lambda () (ob-chat-ai-test-index-replace
                  "* One\n" "* One\n:PROPERTIES:\n:header-args:chat-ai: :session t\n:END:\n")))
    ("a line that is no property put in a property drawer" read
     ,(lambda () (ob-chat-ai-test-index-goto ":session s :model m\n")
        (insert "A line.\n")))
    ("a heading made a subheading" read
     ,(lambda () (ob-chat-ai-test-index-replace "* Two" "** Two")))
    ("a #+PROPERTY line added" read
     ,(lambda () (goto-char (point-min))
        (insert "#+PROPERTY: header-args:chat-ai :session t\n")
        (org-set-regexps-and-options))
     ,(lambda () (ob-chat-ai-test-index-undo) (org-set-regexps-and-options)))
    ("header-args written in a body" read
     ,(lambda () (ob-chat-ai-test-index-replace "Last." "What are header-args?")))
    ("an edit that Emacs did not announce" read
     ,(lambda () (ob-chat-ai-test-index-goto ":session t\n")
        (let ((inhibit-modification-hooks t))
          (insert "Hidden.\n"))))
    ("an edit that Emacs did not announce, then one it did" read
     ,(lambda () (ob-chat-ai-test-index-goto ":session t\n")
        (let ((inhibit-modification-hooks t))
          (insert "Hidden.\n"))
        (ob-chat-ai-test-index-replace "Last." "Last!")))
    ("an edit in an indirect buffer" read
     ,(lambda () (let ((base (current-buffer)))
                   (with-current-buffer (clone-indirect-buffer nil nil)
                     (ob-chat-ai-test-index-replace ": Two." ": Dos.")
                     (ob-chat-ai-messages-session-blocks "s" (point-max))
                     (ob-chat-ai-test-index-replace ": One." ": Uno.")
                     (kill-buffer))
                   (set-buffer base)))
     ,(lambda () (ob-chat-ai-test-index-replace ": Dos." ": Two.")
        (ob-chat-ai-test-index-replace ": Uno." ": One.")))
    ("Babel's default header args changed" read
     ,(lambda () (setq-local org-babel-default-header-args:chat-ai
                             (cons '(:session . "t") org-babel-default-header-args:chat-ai)))
     ,(lambda () (kill-local-variable 'org-babel-default-header-args:chat-ai))))
  "Edits as (NAME HOW DO UNDO): HOW is as for `ob-chat-ai-test-index-check'.
DO makes the edit and UNDO takes it back; without UNDO, `undo' does.")

(ert-deftest ob-chat-ai-test-index-says-what-a-fresh-read-says-after-each-edit ()
  (ob-chat-ai-test-with-org ob-chat-ai-test-index-document
    (buffer-enable-undo)
    (ob-chat-ai-test-index-check nil)
    (dolist (edit ob-chat-ai-test-index-edits)
      (ert-info ((car edit) :prefix "Edit: ")
        (let ((original (buffer-string)))
          (undo-boundary)
          (save-excursion (funcall (nth 2 edit)))
          (undo-boundary)
          (ob-chat-ai-test-index-check (nth 1 edit))
          (funcall (or (nth 3 edit) #'ob-chat-ai-test-index-undo))
          (should (equal (buffer-string) original))
          (ob-chat-ai-test-index-check nil))))))

(ert-deftest ob-chat-ai-test-index-keeps-up-with-edits-in-a-row ()
  (ob-chat-ai-test-with-org ob-chat-ai-test-index-document
    (ob-chat-ai-test-index-check nil)
    (dolist (edit ob-chat-ai-test-index-edits)
      (when (or (eq (nth 1 edit) 'kept)
                (member (car edit) '("a heading made a subheading"
                                     "header-args written in a body"
                                     "an edit that Emacs did not announce")))
        (ert-info ((car edit) :prefix "Edit: ")
          (save-excursion (funcall (nth 2 edit)))
          (ob-chat-ai-test-index-check (nth 1 edit)))))))

;;;; What the server receives

(defconst ob-chat-ai-test-index-session "* Chat
:PROPERTIES:
:header-args:chat-ai: :session s :model m
:END:
#+begin_src chat-ai :system \"Be brief.\"
one
#+end_src

#+RESULTS:
: uno

#+begin_src chat-ai :session s
two
#+end_src

#+RESULTS:
: dos

#+begin_src chat-ai
three
#+end_src
"
  "Three blocks of session s, two of it by their heading's property.")

(defconst ob-chat-ai-test-index-sent
  '(("system" "Be brief.") ("user" "one") ("assistant" "uno")
    ("user" "two") ("assistant" "dos") ("user" "three"))
  "What the last block of `ob-chat-ai-test-index-session' sends.")

(defun ob-chat-ai-test-index-send (&optional search)
  "Return the messages that the block whose line matches SEARCH sends.
SEARCH is the last block's body by default.  The block runs with
:results silent, so that the buffer is left as it is."
  (ob-chat-ai-test-clear-received)
  (save-excursion
    (goto-char (point-min))
    (re-search-forward (concat "^" (or search "three") "$"))
    (org-babel-execute-src-block nil nil '((:results . "silent"))))
  (ob-chat-ai-test-messages-sent (car (ob-chat-ai-test-received 1))))

(ert-deftest ob-chat-ai-test-index-session-sent-after-edits ()
  (ob-chat-ai-test-with-org ob-chat-ai-test-index-session
    (buffer-enable-undo)
    (should (equal (ob-chat-ai-test-index-send) ob-chat-ai-test-index-sent))
    (ob-chat-ai-test-execute "^two$")
    (undo-boundary)
    (should (equal (ob-chat-ai-test-index-send)
                   '(("system" "Be brief.") ("user" "one") ("assistant" "uno")
                     ("user" "two") ("assistant" "two") ("user" "three"))))
    (ob-chat-ai-test-index-undo)
    (should (equal (ob-chat-ai-test-index-send) ob-chat-ai-test-index-sent))
    (goto-char (point-min))
    (search-forward "one")
    (dolist (char (string-to-list " more"))
      (insert char))
    (undo-boundary)
    (should (equal (nth 1 (ob-chat-ai-test-index-send)) '("user" "one more")))
    (ob-chat-ai-test-index-undo)
    (ob-chat-ai-test-index-replace ": uno\n\n" ": uno\n\n#+begin_src chat-ai
new
#+end_src

#+RESULTS:
: nuevo

")
    (undo-boundary)
    (should (equal (ob-chat-ai-test-index-send)
                   '(("system" "Be brief.") ("user" "one") ("assistant" "uno")
                     ("user" "new") ("assistant" "nuevo")
                     ("user" "two") ("assistant" "dos") ("user" "three"))))
    (ob-chat-ai-test-index-undo)
    (should (equal (ob-chat-ai-test-index-send) ob-chat-ai-test-index-sent))
    (ob-chat-ai-test-index-replace "#+begin_src chat-ai :session s\ntwo\n#+end_src

#+RESULTS:
: dos

" "")
    (undo-boundary)
    (should (equal (ob-chat-ai-test-index-send)
                   '(("system" "Be brief.") ("user" "one") ("assistant" "uno")
                     ("user" "three"))))
    (ob-chat-ai-test-index-undo)
    (ob-chat-ai-test-index-replace "two\n#+end_src\n" "two\n")
    (undo-boundary)
    (should (equal (ob-chat-ai-test-index-send "two")
                   '(("system" "Be brief.") ("user" "one") ("assistant" "uno")
                     ("user" "two\n\n#+RESULTS:\n: dos\n\n#+begin_src chat-ai\nthree"))))
    (ob-chat-ai-test-index-undo)
    (should (equal (ob-chat-ai-test-index-send) ob-chat-ai-test-index-sent))
    (ob-chat-ai-test-index-replace ":END:\n" ":END:\n#+begin_example\n")
    (ob-chat-ai-test-index-replace ": uno\n" ": uno\n#+end_example\n")
    (undo-boundary)
    (should (equal (ob-chat-ai-test-index-send)
                   '(("user" "two") ("assistant" "dos") ("user" "three"))))
    (ob-chat-ai-test-index-undo)
    (should (equal (ob-chat-ai-test-index-send) ob-chat-ai-test-index-sent))
    (ob-chat-ai-test-index-replace ":session s :model m" ":session x :model m")
    (undo-boundary)
    (should (equal (ob-chat-ai-test-index-send)
                   '(("system" "Be brief.") ("user" "one") ("assistant" "uno")
                     ("user" "three"))))
    (ob-chat-ai-test-index-undo)
    (ob-chat-ai-test-index-replace "Be brief." "Be terse.")
    (undo-boundary)
    (should (equal (car (ob-chat-ai-test-index-send)) '("system" "Be terse.")))
    (ob-chat-ai-test-index-undo)
    (should (equal (buffer-string) ob-chat-ai-test-index-session))
    (should (equal (ob-chat-ai-test-index-send) ob-chat-ai-test-index-sent))))

(ert-deftest ob-chat-ai-test-index-session-sent-from-a-narrowed-buffer ()
  (ob-chat-ai-test-with-org ob-chat-ai-test-index-session
    (should (equal (ob-chat-ai-test-index-send) ob-chat-ai-test-index-sent))
    (ob-chat-ai-test-index-replace ": dos" ": dos, then")
    (search-forward "three")
    (org-narrow-to-block)
    (should (equal (nth 4 (ob-chat-ai-test-index-send)) '("assistant" "dos, then")))
    (should (buffer-narrowed-p))
    (ob-chat-ai-test-index-replace "three" "three, narrowed")
    (widen)
    (ob-chat-ai-test-index-replace ": uno" ": uno, wide")
    (narrow-to-region (point) (point-max))
    (should (equal (ob-chat-ai-test-index-send "three, narrowed")
                   '(("system" "Be brief.") ("user" "one") ("assistant" "uno, wide")
                     ("user" "two") ("assistant" "dos, then")
                     ("user" "three, narrowed"))))))

(ert-deftest ob-chat-ai-test-index-session-sent-after-revert-buffer ()
  (let ((file (make-temp-file "chat-ai-index" nil ".org" ob-chat-ai-test-index-session)))
    (unwind-protect
        (ob-chat-ai-test-with-org ""
          (with-current-buffer (find-file-noselect file)
            (unwind-protect
                (progn
                  (should (equal (ob-chat-ai-test-index-send) ob-chat-ai-test-index-sent))
                  (ob-chat-ai-test-execute "^two$")
                  (should (equal (nth 4 (ob-chat-ai-test-index-send))
                                 '("assistant" "two")))
                  (revert-buffer t t)
                  (should (equal (ob-chat-ai-test-index-send) ob-chat-ai-test-index-sent))
                  (with-temp-file file
                    (insert (replace-regexp-in-string
                             ": uno" ": uno, from the file" ob-chat-ai-test-index-session)))
                  (revert-buffer t t t)
                  (should (equal (nth 2 (ob-chat-ai-test-index-send))
                                 '("assistant" "uno, from the file")))
                  (with-temp-file file
                    (insert ob-chat-ai-test-index-session))
                  (revert-buffer t t)
                  (should (equal (ob-chat-ai-test-index-send) ob-chat-ai-test-index-sent)))
              (set-buffer-modified-p nil)
              (kill-buffer))))
      (delete-file file))))

(provide 'test-ob-chat-ai-index)

;;; test-ob-chat-ai-index.el ends here
