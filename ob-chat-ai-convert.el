;;; ob-chat-ai-convert.el --- Markdown replies as Org text  -*- lexical-binding: t; -*-

;; Copyright (C) 2026 The ob-chat-ai authors

;; This file is not part of GNU Emacs.

;; SPDX-License-Identifier: GPL-3.0-or-later

;;; Commentary:

;; Models answer in Markdown.  With :format org, a chat-ai block's reply
;; becomes Org: fenced code becomes a source block named for Babel, its
;; lines that Org would read as syntax protected by a comma; headings go
;; below the block's own heading; emphasis, inline code, links and lists
;; take their Org form.
;;
;; The conversion works line by line, so it can follow a stream: feed
;; it text as it comes with `ob-chat-ai-convert-feed', which returns the
;; Org text of the lines completed so far, and end with
;; `ob-chat-ai-convert-finish'.  However the text is cut into pieces,
;; the result is the same.

;;; Code:

;;;; Requirements

(require 'cl-lib)
(require 'subr-x)

;;;; The converter

(cl-defstruct (ob-chat-ai-convert
               (:constructor ob-chat-ai-convert-create (&optional level))
               (:copier nil))
  "The state of a Markdown to Org conversion."
  (level 0 :documentation "The level of the heading the reply goes under.")
  (pending "" :documentation "The start of a line whose end has not come yet.")
  (fence nil :documentation "The fence of the open code block, or nil.")
  (closer nil :documentation "The Org line that closes the open code block."))

(defconst ob-chat-ai-convert-languages
  '(("javascript" . "js") ("node" . "js") ("shell" . "sh") ("bash" . "sh")
    ("zsh" . "sh") ("console" . "sh") ("shell-session" . "sh") ("py" . "python")
    ("python3" . "python") ("elisp" . "emacs-lisp") ("emacs-lisp" . "emacs-lisp")
    ("lisp" . "lisp") ("rb" . "ruby") ("c++" . "C++") ("cpp" . "C++") ("c" . "C")
    ("golang" . "go") ("rs" . "rust") ("yml" . "yaml") ("md" . "markdown")
    ("ts" . "typescript") ("postgresql" . "sql") ("psql" . "sql"))
  "Markdown code block languages, in lower case, and their Babel names.
Languages not listed keep their name, in lower case.")

(defun ob-chat-ai-convert-feed (converter text)
  "Give CONVERTER the next piece TEXT of the reply; return the new Org text.
The Org text is that of the lines TEXT completes, each ending in a
newline; the rest waits for the next piece."
  (let* ((all (concat (ob-chat-ai-convert-pending converter) text))
         (end (string-match-p "\n[^\n]*\\'" all)))
    (if (not end)
        (progn (setf (ob-chat-ai-convert-pending converter) all) "")
      (setf (ob-chat-ai-convert-pending converter) (substring all (1+ end)))
      (mapconcat (lambda (line) (concat (ob-chat-ai-convert--line converter line) "\n"))
                 (split-string (substring all 0 end) "\n")
                 ""))))

(defun ob-chat-ai-convert-finish (converter)
  "Return the Org text of what is left in CONVERTER, closing an open code block."
  (let* ((pending (ob-chat-ai-convert-pending converter))
         (last (if (string-empty-p pending)
                   ""
                 (ob-chat-ai-convert--line converter pending)))
         (closer (ob-chat-ai-convert-closer converter)))
    (setf (ob-chat-ai-convert-pending converter) "")
    (when closer
      (setf (ob-chat-ai-convert-fence converter) nil
            (ob-chat-ai-convert-closer converter) nil))
    (concat last
            (and closer (concat (if (string-empty-p last) "" "\n") closer)))))

(defun ob-chat-ai-convert-markdown (text &optional level)
  "Return Markdown TEXT as Org text, its headings below a heading of LEVEL."
  (let ((converter (ob-chat-ai-convert-create (or level 0))))
    (concat (ob-chat-ai-convert-feed converter text)
            (ob-chat-ai-convert-finish converter))))

;;;; Lines

(defun ob-chat-ai-convert--line (converter line)
  "Return the Org form of Markdown LINE, updating CONVERTER's state."
  (let ((fence (ob-chat-ai-convert-fence converter)))
    (cond
     (fence
      (if (string-match (concat "\\`[ \t]*" (regexp-quote fence)
                                (regexp-quote (substring fence 0 1)) "*[ \t]*\\'")
                        line)
          (prog1 (ob-chat-ai-convert-closer converter)
            (setf (ob-chat-ai-convert-fence converter) nil
                  (ob-chat-ai-convert-closer converter) nil))
        (ob-chat-ai-convert--protect line)))
     ((string-match "\\`[ \t]*\\(```+\\|~~~+\\)[ \t]*\\([^ \t`]*\\)" line)
      (let ((language (ob-chat-ai-convert--language (match-string 2 line))))
        (setf (ob-chat-ai-convert-fence converter) (match-string 1 line)
              (ob-chat-ai-convert-closer converter)
              (if language "#+end_src" "#+end_example"))
        (if language (concat "#+begin_src " language) "#+begin_example")))
     ((string-match "\\`\\(#\\{1,6\\}\\)[ \t]+\\(.*?\\)[ \t#]*\\'" line)
      (concat (make-string (+ (ob-chat-ai-convert-level converter)
                              (length (match-string 1 line)))
                           ?*)
              " " (ob-chat-ai-convert--inline (match-string 2 line))))
     ((string-match-p "\\`[ \t]*\\([-*_]\\)[ \t]*\\(?:\\1[ \t]*\\)\\{2,\\}\\'" line)
      "-----")
     ((string-match "\\`\\([ \t]*\\)[-*+][ \t]+\\(.*\\)\\'" line)
      (concat (match-string 1 line) "- "
              (ob-chat-ai-convert--inline (match-string 2 line))))
     ((string-match "\\`\\([ \t]*\\)>[ \t]?\\(.*\\)\\'" line)
      (concat (match-string 1 line) ": " (match-string 2 line)))
     (t (ob-chat-ai-convert--protect-text (ob-chat-ai-convert--inline line))))))

(defun ob-chat-ai-convert--language (name)
  "Return the Babel name of Markdown code language NAME, or nil for none."
  (unless (string-empty-p name)
    (let ((lower (downcase name)))
      (or (cdr (assoc lower ob-chat-ai-convert-languages)) lower))))

(defun ob-chat-ai-convert--protect (line)
  "Return code LINE with a comma before what Org would read as syntax."
  (if (string-match-p "\\`[ \t]*,*\\(?:\\*\\|#\\+\\)" line)
      (replace-regexp-in-string "\\`\\([ \t]*\\)" "\\1," line t)
    line))

(defun ob-chat-ai-convert--protect-text (line)
  "Return text LINE, a comma before a line start that Org would take for a block."
  (if (string-match-p "\\`[ \t]*#\\+\\(?:begin\\|end\\)_" line)
      (ob-chat-ai-convert--protect line)
    line))

;;;; Inline markup

(defun ob-chat-ai-convert--inline (text)
  "Return the Markdown inline markup of TEXT in its Org form.
Code spans are kept apart, so that nothing inside them changes."
  (let ((pieces (split-string text "`"))
        (code nil)
        (parts nil))
    (if (cl-evenp (length pieces))
        (ob-chat-ai-convert--emphasis text)
      (dolist (piece pieces)
        (push (if code
                  (if (string-search "~" piece) (concat "=" piece "=")
                    (concat "~" piece "~"))
                (ob-chat-ai-convert--emphasis piece))
              parts)
        (setq code (not code)))
      (apply #'concat (nreverse parts)))))

(defun ob-chat-ai-convert--emphasis (text)
  "Return TEXT with Markdown links, bold, italic and strike-through as Org's."
  (let ((bold (string #xE000)))
    (thread-last
      text
      (replace-regexp-in-string "\\[\\([^]\n]+\\)\\](\\([^) \n]+\\))" "[[\\2][\\1]]")
      (replace-regexp-in-string "\\*\\*\\([^*\n]+\\)\\*\\*" (concat bold "\\1" bold))
      (replace-regexp-in-string "\\_<__\\([^_\n]+\\)__\\_>" (concat bold "\\1" bold))
      (replace-regexp-in-string "\\(^\\|[^*[:alnum:]]\\)\\*\\([^* \n][^*\n]*\\)\\*"
                                "\\1/\\2/")
      (replace-regexp-in-string
       "\\(^\\|[^_[:alnum:]]\\)_\\([^_ \n][^_\n]*\\)_\\($\\|[^_[:alnum:]]\\)" "\\1/\\2/\\3")
      (replace-regexp-in-string "~~\\([^~\n]+\\)~~" "+\\1+")
      (replace-regexp-in-string bold "*"))))

(provide 'ob-chat-ai-convert)

;;; ob-chat-ai-convert.el ends here
